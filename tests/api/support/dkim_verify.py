"""Verifies a message's DKIM signatures with dkimpy (an implementation independent of posthorn's), the
public keys given on the command line instead of DNS.

    dkim_verify.py MESSAGE SELECTOR DOMAIN TXT [SELECTOR DOMAIN TXT ...]

MESSAGE is a file holding the message as it would be handed to a mailbox (CRLF lines, dot-stuffing
undone). Each SELECTOR DOMAIN TXT triple is what a receiver would find at
SELECTOR._domainkey.DOMAIN ("v=DKIM1; k=rsa; p=..."). Every DKIM-Signature is verified, not only the
first one dkim.verify checks; one line per signature goes to stderr. Prints "pass" and exits 0 when
there is at least one signature and all of them verify; prints "fail" and exits 1 otherwise.
"""

import sys

import dkim
import dkim.util


def records(arguments):
    if len(arguments) % 3 != 0:
        sys.exit("usage: dkim_verify.py MESSAGE SELECTOR DOMAIN TXT [SELECTOR DOMAIN TXT ...]")
    found = {}
    for index in range(0, len(arguments), 3):
        selector, domain, txt = arguments[index : index + 3]
        name = f"{selector}._domainkey.{domain}.".lower()
        found[name] = txt.encode("ascii")
    return found


def describe(value):
    """The signature's s=, d= and a=, for the log."""
    try:
        tags = dkim.util.parse_tag_value(value)
    except dkim.util.InvalidTagValueList:
        return "unparsable"
    return " ".join(
        f"{tag}={tags.get(tag.encode(), b'?').decode('ascii', 'replace')}" for tag in ("s", "d", "a")
    )


def main():
    with open(sys.argv[1], "rb") as file:
        message = file.read()
    txt = records(sys.argv[2:])

    # dkimpy asks for a name as bytes (or str, in some versions) and passes timeout= and, in some
    # versions, more keywords.
    def dnsfunc(name, *_args, **_kwargs):
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        return txt.get(name.lower())

    verifier = dkim.DKIM(message)
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    verified = 0
    for index, value in enumerate(signatures):
        try:
            ok = bool(verifier.verify(idx=index, dnsfunc=dnsfunc))
            reason = "" if ok else "signature does not verify"
        except dkim.DKIMException as error:
            ok, reason = False, str(error)
        outcome = "pass" if ok else "fail"
        print(f"signature {index} ({describe(value)}): {outcome} {reason}".rstrip(), file=sys.stderr)
        verified += ok
    count = len(signatures)
    if count == 0:
        print("no DKIM-Signature header", file=sys.stderr)
    passed = count > 0 and verified == count
    print("pass" if passed else "fail")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
