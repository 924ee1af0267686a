// Sends one message over SMTP submission with Nodemailer (npm install nodemailer). The user name is the
// caller's sub, the password a token with the send scope. POSTHORN_SMTP_HOST (default 127.0.0.1),
// POSTHORN_SMTP_PORT (default 587), POSTHORN_SMTP_USER and POSTHORN_TOKEN come from the environment.
// Run: node smtp.cjs
const nodemailer = require("nodemailer");

const transport = nodemailer.createTransport({
  host: process.env.POSTHORN_SMTP_HOST ?? "127.0.0.1",
  port: Number(process.env.POSTHORN_SMTP_PORT ?? 587),
  secure: process.env.POSTHORN_SMTP_PORT === "465",
  // STARTTLS when the server offers it; set POSTHORN_SMTP_REQUIRE_TLS=1 to refuse plain text.
  requireTLS: process.env.POSTHORN_SMTP_REQUIRE_TLS === "1",
  auth: { user: process.env.POSTHORN_SMTP_USER, pass: process.env.POSTHORN_TOKEN },
});

async function main() {
  // A 4xx reply (over the caller's rate, the queue briefly unavailable) is worth another try.
  for (let attempt = 1; attempt <= 5; attempt++) {
    try {
      const info = await transport.sendMail({
        from: process.env.FROM ?? "Shop <shop@example.com>",
        to: process.env.TO ?? "customer@example.org",
        subject: "Hello from Nodemailer",
        text: "Sent over SMTP submission.",
      });
      // "250 2.0.0 queued as <id>"
      console.log(info.response.split(" ").pop());
      return 0;
    } catch (error) {
      if (error.responseCode >= 400 && error.responseCode < 500) {
        await new Promise((resolve) => setTimeout(resolve, attempt * 1000));
        continue;
      }
      console.error(`refused: ${error.response ?? error.message}`);
      return 1;
    }
  }
  console.error("gave up after 5 attempts");
  return 1;
}

main().then((code) => process.exit(code));
