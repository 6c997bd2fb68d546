"""Hands one message to Keyward's LMTP listener with Python's own LMTP client (smtplib.LMTP).

Usage: python3 lmtp_send.py HOST PORT FROM MESSAGE_FILE RCPT [RCPT...]
Prints a JSON object: {"refused": {rcpt: [code, text]}, "lhlo": [code, text]} and exits 0 when
the message was accepted for at least one recipient.
"""
import json
import smtplib
import sys


def main():
    host, port, sender, path, *rcpts = sys.argv[1:]
    with open(path, "rb") as f:
        msg = f.read()
    with smtplib.LMTP(host, int(port), timeout=10) as lmtp:
        code, text = lmtp.ehlo()  # smtplib.LMTP sends LHLO here
        try:
            refused = lmtp.sendmail(sender, rcpts, msg)
        except smtplib.SMTPRecipientsRefused as e:
            refused = e.recipients
            print(json.dumps({"lhlo": [code, text.decode()], "refused": {k: [v[0], v[1].decode()] for k, v in refused.items()}, "accepted": 0}))
            return 1
        print(json.dumps({"lhlo": [code, text.decode()],
                          "refused": {k: [v[0], v[1].decode()] for k, v in refused.items()},
                          "accepted": len(rcpts) - len(refused)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
