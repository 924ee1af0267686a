"""A real SMTP server (aiosmtpd) for interoperability tests.

Writes every message it accepts to DIR/N.eml (the DATA as received, dot-stuffing undone by aiosmtpd)
and DIR/N.json (the envelope), then prints READY once it accepts connections.
"""
import argparse
import asyncio
import json
import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Recorder:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, str(self.count))
        with open(base + ".eml.tmp", "wb") as out:
            out.write(envelope.original_content or envelope.content)
        with open(base + ".json", "w") as out:
            json.dump(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "mail_options": envelope.mail_options,
                    "tls": session.ssl is not None
                    or server.transport.get_extra_info("ssl_object") is not None,
                    "authenticated": bool(session.authenticated),
                },
                out,
            )
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 accepted"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password:
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    return check


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--mode", choices=["plain", "starttls", "implicit"], default="plain")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--auth", help="user:password required for AUTH")
    args = parser.parse_args()

    context = None
    if args.mode != "plain":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    kwargs = {"hostname": "127.0.0.1", "port": args.port, "enable_SMTPUTF8": True}
    if args.mode == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    elif args.mode == "implicit":
        kwargs.update(ssl_context=context)
    if args.auth:
        user, password = args.auth.split(":", 1)
        kwargs.update(authenticator=authenticator(user, password), auth_require_tls=args.mode != "plain")
    else:
        kwargs.update(auth_require_tls=False)

    controller = Controller(Recorder(args.dir), **kwargs)
    controller.start()
    print("READY", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
