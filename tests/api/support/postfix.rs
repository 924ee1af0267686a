//! A private Postfix instance for the tests (its own configuration, queue and log), stopped when
//! dropped. Its master runs as root.

use std::path::Path;
use std::process::Command;

use super::peers::free_port;

/// A running private Postfix.
pub struct PrivatePostfix {
    dir: tempfile::TempDir,
    /// Its SMTP port on 127.0.0.1.
    pub port: u16,
}

impl PrivatePostfix {
    /// Starts one that accepts mail from this host on a free port; `extra` gets its configuration
    /// directory (to write maps into) and returns more `main.cf` lines (where to relay, ...).
    pub fn start(extra: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("posthorn-test-postfix")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        set_mode(root, 0o755);
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir_all(root.join(sub)).expect("directory");
        }
        run(Command::new("chown").args(["postfix", &root.join("data").display().to_string()]));
        let port = free_port();
        let extra = extra(&root.join("etc"));
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {root}/queue\n\
             data_directory = {root}/data\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             maillog_file = {root}/maillog\n\
             maillog_file_prefixes = {root}\n\
             myhostname = app-host.localdomain\n\
             mydestination =\n\
             local_recipient_maps =\n\
             local_transport = error:local delivery is disabled\n\
             alias_maps =\n\
             alias_database =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             smtp_dns_support_level = disabled\n\
             smtp_host_lookup = native\n\
             smtp_tls_security_level = none\n\
             {extra}",
            root = root.display()
        );
        std::fs::write(root.join("etc/main.cf"), main_cf).expect("main.cf");
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n\
             pickup unix n - n 60 1 pickup\n\
             cleanup unix n - n - 0 cleanup\n\
             qmgr unix n - n 300 1 qmgr\n\
             rewrite unix - - n - - trivial-rewrite\n\
             bounce unix - - n - 0 bounce\n\
             defer unix - - n - 0 bounce\n\
             trace unix - - n - 0 bounce\n\
             verify unix - - n - 1 verify\n\
             flush unix n - n 1000? 0 flush\n\
             proxymap unix - - n - - proxymap\n\
             smtp unix - - n - - smtp\n\
             relay unix - - n - - smtp\n\
             showq unix n - n - - showq\n\
             error unix - - n - - error\n\
             retry unix - - n - - error\n\
             discard unix - - n - - discard\n\
             anvil unix - - n - 1 anvil\n\
             scache unix - - n - 1 scache\n\
             postlog unix-dgram n - n - 1 postlogd\n"
        );
        std::fs::write(root.join("etc/master.cf"), master_cf).expect("master.cf");
        run(Command::new("postfix").args(["-c", &root.join("etc").display().to_string(), "start"]));
        Self { dir, port }
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for PrivatePostfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .args([
                "-c",
                &self.dir.path().join("etc").display().to_string(),
                "stop",
            ])
            .output();
    }
}

/// Sets a file's mode.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Whether this process is not root (Postfix's master must start as root).
pub fn not_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() != "0")
        .unwrap_or(true)
}

fn run(command: &mut Command) {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
