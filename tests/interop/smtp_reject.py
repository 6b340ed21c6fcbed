"""An aiosmtpd handler that refuses every recipient permanently (550), for the test of an SMTP
permanent error going to the dead-letter stream:

    python -m aiosmtpd -n -l 127.0.0.1:<port> -c smtp_reject.Reject     (with tests/interop on PYTHONPATH)
"""


class Reject:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "550 5.1.1 no such mailbox"
