"""Print a demo admin JWT for ``GET /admin/stats``: HS256, signed with demo-jwt-secret.txt, valid for an hour.

    python examples/notes/make_token.py [SUBJECT] [SCOPES]

The secret is a DEMO secret committed with the example: anyone can sign tokens with it. Replace it (and keep the
new one out of version control) before you deploy anything built from this example.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jwt

SECRET_FILE = Path(__file__).with_name("demo-jwt-secret.txt")
ISSUER = "notes-demo"
AUDIENCE = "notes-api"
LIFETIME_S = 3600


def main() -> None:
    subject = sys.argv[1] if len(sys.argv) > 1 else "admin"
    scopes = sys.argv[2] if len(sys.argv) > 2 else "notes:admin"
    now = int(time.time())
    claims = {"sub": subject, "scope": scopes, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + LIFETIME_S}
    print(jwt.encode(claims, SECRET_FILE.read_text().strip(), algorithm="HS256"))


if __name__ == "__main__":
    main()
