//! Signing checked offline: the signature's tags, the headers it covers, keys and records, and mail-auth's
//! own verifier with the published records in a cache.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};

use super::*;

const MESSAGE: &str = "From: Shop <shop@example.com>\r\n\
    To: Ann <ann@example.org>\r\n\
    Subject: Your order\r\n\
    Date: Mon, 1 Dec 2025 10:00:00 +0000\r\n\
    Message-ID: <order-1@example.com>\r\n\
    MIME-Version: 1.0\r\n\
    Content-Type: text/plain; charset=utf-8\r\n\
    X-Mailer: posthorn\r\n\
    \r\n\
    Thank you for your order.\r\n";

/// RSA generation takes a while at the test profile's optimization level: one key for all tests.
fn rsa_key() -> &'static GeneratedKey {
    static KEY: OnceLock<GeneratedKey> = OnceLock::new();
    KEY.get_or_init(|| generate(DkimAlgorithm::RsaSha256).expect("an RSA key"))
}

fn key(domain: &str, selector: &str, algorithm: DkimAlgorithm) -> (DkimKey, String) {
    let (pem, txt) = match algorithm {
        DkimAlgorithm::RsaSha256 => (rsa_key().private_pem.clone(), rsa_key().dns_txt.clone()),
        DkimAlgorithm::Ed25519Sha256 => {
            let generated = generate(algorithm).expect("an Ed25519 key");
            (generated.private_pem, generated.dns_txt)
        }
    };
    let key =
        DkimKey::from_pem(domain, selector, algorithm, pem.as_bytes()).expect("the key loads");
    (key, txt)
}

/// The tags of each DKIM-Signature header, unfolded, whitespace removed from the values.
fn signatures(signed: &[u8]) -> Vec<BTreeMap<String, String>> {
    let text = std::str::from_utf8(signed).expect("ASCII");
    let head = text.split("\r\n\r\n").next().expect("a head");
    head.replace("\r\n\t", " ")
        .replace("\r\n ", " ")
        .split("\r\n")
        .filter_map(|line| line.strip_prefix("DKIM-Signature:"))
        .map(|value| {
            value
                .split(';')
                .filter_map(|tag| {
                    let (name, value) = tag.split_once('=')?;
                    Some((name.trim().to_owned(), value.split_whitespace().collect()))
                })
                .collect::<BTreeMap<String, String>>()
        })
        .collect()
}

fn signed_names(tags: &BTreeMap<String, String>) -> Vec<String> {
    let mut names: Vec<String> = tags["h"].split(':').map(str::to_ascii_lowercase).collect();
    names.sort();
    names
}

#[test]
fn a_signature_names_its_domain_selector_algorithm_and_the_headers_present() {
    for (algorithm, name) in [
        (DkimAlgorithm::RsaSha256, "rsa-sha256"),
        (DkimAlgorithm::Ed25519Sha256, "ed25519-sha256"),
    ] {
        let (key, _) = key("example.com", "s2025", algorithm);
        let signed = DkimSigner::new(vec![key])
            .sign(MESSAGE.as_bytes())
            .expect("signs")
            .expect("a key for example.com");
        assert!(signed.starts_with(b"DKIM-Signature: "), "{name}");
        assert!(
            signed.ends_with(MESSAGE.as_bytes()),
            "the message follows unchanged"
        );
        let found = signatures(&signed);
        assert_eq!(found.len(), 1, "{name}");
        let tags = &found[0];
        assert_eq!(tags["d"], "example.com");
        assert_eq!(tags["s"], "s2025");
        assert_eq!(tags["a"], name);
        assert_eq!(tags["c"], "relaxed/relaxed");
        assert!(tags["bh"].len() > 40 && tags["b"].len() > 40, "{tags:?}");
        assert_eq!(
            signed_names(tags),
            [
                "content-type",
                "date",
                "from",
                "message-id",
                "mime-version",
                "subject",
                "to"
            ],
            "present headers only: no Cc, Reply-To, List-Unsubscribe; never X-Mailer"
        );
    }
}

#[test]
fn list_unsubscribe_and_a_repeated_header_are_signed_as_they_occur() {
    let (key, _) = key("example.com", "s1", DkimAlgorithm::Ed25519Sha256);
    let message = MESSAGE.replace(
        "Subject:",
        "cc: bo@example.org\r\nList-Unsubscribe: <https://example.com/u/1>\r\n\
         List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nTo: Cy <cy@example.org>\r\nSubject:",
    );
    let signed = DkimSigner::new(vec![key])
        .sign(message.as_bytes())
        .unwrap()
        .unwrap();
    let names = signed_names(&signatures(&signed)[0]);
    for name in ["cc", "list-unsubscribe", "list-unsubscribe-post"] {
        assert!(names.contains(&name.to_owned()), "{name} in {names:?}");
    }
    assert_eq!(
        names.iter().filter(|name| *name == "to").count(),
        2,
        "{names:?}"
    );
}

#[test]
fn without_a_key_for_the_from_domain_nothing_is_signed() {
    let (key, _) = key("example.com", "s1", DkimAlgorithm::Ed25519Sha256);
    let signer = DkimSigner::new(vec![key]);
    assert!(!signer.is_empty());
    for message in [
        MESSAGE.replace("shop@example.com", "shop@example.net"),
        MESSAGE.replace("shop@example.com", "shop@news.example.com"),
        MESSAGE.replace("From: Shop <shop@example.com>\r\n", ""),
    ] {
        assert!(
            signer.sign(message.as_bytes()).unwrap().is_none(),
            "{message}"
        );
    }
    let shouting = MESSAGE.replace("shop@example.com", "SHOP@EXAMPLE.COM");
    assert!(signer.sign(shouting.as_bytes()).unwrap().is_some());
    let empty = DkimSigner::new(Vec::new());
    assert!(empty.is_empty());
    assert!(empty.sign(MESSAGE.as_bytes()).unwrap().is_none());
}

#[test]
fn every_selector_of_the_domain_signs() {
    let (rsa, _) = key("example.com", "rsa1", DkimAlgorithm::RsaSha256);
    let (ed, _) = key("Example.COM", "ed1", DkimAlgorithm::Ed25519Sha256);
    let (other, _) = key("example.net", "net1", DkimAlgorithm::Ed25519Sha256);
    let signed = DkimSigner::new(vec![rsa, ed, other])
        .sign(MESSAGE.as_bytes())
        .unwrap()
        .unwrap();
    let found = signatures(&signed);
    let selectors: Vec<&str> = found.iter().map(|tags| tags["s"].as_str()).collect();
    assert_eq!(selectors, ["rsa1", "ed1"]);
    assert!(found.iter().all(|tags| tags["d"] == "example.com"));
}

#[test]
fn debug_shows_no_key_material() {
    let generated = generate(DkimAlgorithm::Ed25519Sha256).unwrap();
    let key = DkimKey::from_pem(
        "example.com",
        "s1",
        DkimAlgorithm::Ed25519Sha256,
        generated.private_pem.as_bytes(),
    )
    .unwrap();
    let body: String = generated
        .private_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let middle = &body[body.len() / 2..body.len() / 2 + 16];
    let shown = format!("{key:?} {generated:?}");
    let shown = format!("{shown} {:?}", DkimSigner::new(vec![key]));
    assert!(
        shown.contains("s1") && shown.contains("example.com"),
        "{shown}"
    );
    assert!(!shown.contains(middle), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}

#[test]
fn generated_keys_come_with_their_dns_record() {
    let rsa = rsa_key();
    assert!(rsa.private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let p = rsa
        .dns_txt
        .strip_prefix("v=DKIM1; k=rsa; p=")
        .expect("an RSA record");
    // A 2048-bit SubjectPublicKeyInfo is 294 bytes.
    assert_eq!(BASE64.decode(p).unwrap().len(), 294);
    let ed = generate(DkimAlgorithm::Ed25519Sha256).unwrap();
    assert!(ed.private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let p = ed
        .dns_txt
        .strip_prefix("v=DKIM1; k=ed25519; p=")
        .expect("an Ed25519 record");
    assert_eq!(BASE64.decode(p).unwrap().len(), 32);
}

#[test]
fn keys_in_the_other_usual_forms_load() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;

    // PKCS#1 (`BEGIN RSA PRIVATE KEY`), as `openssl genrsa -traditional` writes it.
    let pkcs1 = rsa::RsaPrivateKey::from_pkcs8_pem(&rsa_key().private_pem)
        .unwrap()
        .to_pkcs1_pem(LineEnding::LF)
        .unwrap();
    DkimKey::from_pem(
        "example.com",
        "s1",
        DkimAlgorithm::RsaSha256,
        pkcs1.as_bytes(),
    )
    .expect("PKCS#1 loads");
    // PKCS#8 v1 Ed25519 without the public key, as `openssl genpkey -algorithm ed25519` writes it.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[7; 32]);
    let pem = rsa::pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, &der).unwrap();
    DkimKey::from_pem(
        "example.com",
        "s1",
        DkimAlgorithm::Ed25519Sha256,
        pem.as_bytes(),
    )
    .expect("PKCS#8 v1 loads");
}

#[test]
fn keys_that_do_not_fit_are_refused() {
    let ed = generate(DkimAlgorithm::Ed25519Sha256).unwrap().private_pem;
    let rsa = &rsa_key().private_pem;
    for (domain, selector, algorithm, pem) in [
        ("example.com", "s1", DkimAlgorithm::RsaSha256, ed.as_str()),
        (
            "example.com",
            "s1",
            DkimAlgorithm::Ed25519Sha256,
            rsa.as_str(),
        ),
        ("example.com", "s1", DkimAlgorithm::RsaSha256, "not a PEM"),
        (
            "example.com",
            "s1; x=1",
            DkimAlgorithm::Ed25519Sha256,
            ed.as_str(),
        ),
        (
            "example.com\r\nBcc: x",
            "s1",
            DkimAlgorithm::Ed25519Sha256,
            ed.as_str(),
        ),
        ("", "s1", DkimAlgorithm::Ed25519Sha256, ed.as_str()),
        (
            "example..com",
            "s1",
            DkimAlgorithm::Ed25519Sha256,
            ed.as_str(),
        ),
        (
            "bücher.example",
            "s1",
            DkimAlgorithm::Ed25519Sha256,
            ed.as_str(),
        ),
    ] {
        let Err(error) = DkimKey::from_pem(domain, selector, algorithm, pem.as_bytes()) else {
            panic!("{domain:?} {selector:?} {algorithm} was taken");
        };
        assert!(matches!(error, DkimError::Key(_)), "{error}");
    }
}

#[test]
fn algorithms_are_named_as_in_the_signature() {
    for algorithm in [DkimAlgorithm::RsaSha256, DkimAlgorithm::Ed25519Sha256] {
        assert_eq!(DkimAlgorithm::parse(algorithm.as_str()), Some(algorithm));
        let quoted = format!("\"{algorithm}\"");
        assert_eq!(
            serde_json::from_str::<DkimAlgorithm>(&quoted).unwrap(),
            algorithm
        );
    }
    assert_eq!(
        DkimAlgorithm::parse("RSA-SHA256"),
        Some(DkimAlgorithm::RsaSha256)
    );
    assert_eq!(DkimAlgorithm::parse("rsa-sha1"), None);
    assert!(serde_json::from_str::<DkimAlgorithm>("\"rsa\"").is_err());
}

/// Published keys, where mail-auth looks before it asks DNS.
struct Published(HashMap<Box<str>, Txt>);

impl ResolverCache<Box<str>, Txt> for Published {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.get(name).cloned()
    }

    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _: Box<str>, _: Txt, _: std::time::Instant) {}
}

/// mail-auth's verdict on each signature of `message`, given the TXT records of `keys`.
async fn verify(message: &[u8], keys: &[(&str, &str, &str)]) -> Vec<DkimResult> {
    let published = Published(
        keys.iter()
            .map(|(selector, domain, txt)| {
                let name = format!("{selector}._domainkey.{domain}.").to_ascii_lowercase();
                let record = DomainKey::parse(txt.as_bytes()).expect("a DKIM record");
                (name.into_boxed_str(), Txt::from(record))
            })
            .collect(),
    );
    // Pointed at loopback, so that a name the cache lacks cannot send a query off the machine.
    let authenticator = MessageAuthenticator::new(
        ResolverConfig::from_name_servers(vec![NameServerConfig::udp(Ipv4Addr::LOCALHOST.into())]),
        ResolverOpts::default(),
    )
    .expect("a resolver");
    let parsed = AuthenticatedMessage::parse(message).expect("the message parses");
    authenticator
        .verify_dkim(Parameters::new(&parsed).with_txt_cache(&published))
        .await
        .iter()
        .map(|output| output.result().clone())
        .collect()
}

#[tokio::test]
async fn mail_auth_verifies_every_signature_and_notices_a_changed_body() {
    let (rsa, rsa_txt) = key("example.com", "rsa1", DkimAlgorithm::RsaSha256);
    let (ed, ed_txt) = key("example.com", "ed1", DkimAlgorithm::Ed25519Sha256);
    let signed = DkimSigner::new(vec![rsa, ed])
        .sign(MESSAGE.as_bytes())
        .unwrap()
        .unwrap();
    let published = [
        ("rsa1", "example.com", rsa_txt.as_str()),
        ("ed1", "example.com", ed_txt.as_str()),
    ];
    assert_eq!(
        verify(&signed, &published).await,
        [DkimResult::Pass, DkimResult::Pass]
    );
    let text = String::from_utf8(signed).unwrap();
    let changed = text.replace("Thank you", "Thank You");
    let results = verify(changed.as_bytes(), &published).await;
    assert_eq!(results.len(), 2);
    assert!(
        results.iter().all(|result| *result != DkimResult::Pass),
        "{results:?}"
    );
    // What relaxed canonicalization is for: a relay that re-folds a signed header and pads its
    // whitespace leaves the signatures valid.
    let refolded = text.replace("Subject: Your order", "Subject:  Your\r\n\torder ");
    assert_eq!(
        verify(refolded.as_bytes(), &published).await,
        [DkimResult::Pass, DkimResult::Pass]
    );
}
