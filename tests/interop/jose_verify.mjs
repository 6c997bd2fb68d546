// Verifies a JWT with the npm `jose` library: createLocalJWKSet + jwtVerify, issuer and
// audience checked. This is jose's ordinary verification: it picks the key by kid (and kty/alg)
// and has no notion of which issuer a key belongs to.
//
// Usage: node jose_verify.mjs JWKS_FILE TOKEN_FILE ISSUER AUDIENCE
// Exit 0 and the payload (JSON) on stdout when the token verifies; 1 and the reason on stderr
// when jose rejects it; 2 for usage errors.
import { readFileSync } from 'node:fs';

import { createLocalJWKSet, jwtVerify } from 'jose';

async function main(argv) {
  if (argv.length !== 4) {
    console.error('usage: node jose_verify.mjs JWKS_FILE TOKEN_FILE ISSUER AUDIENCE');
    return 2;
  }
  const [jwksFile, tokenFile, issuer, audience] = argv;
  let jwks;
  let token;
  try {
    jwks = createLocalJWKSet(JSON.parse(readFileSync(jwksFile, 'utf8')));
    token = readFileSync(tokenFile, 'utf8').trim();
  } catch (err) {
    console.error(`jose_verify: cannot read input: ${err.message}`);
    return 2;
  }
  try {
    const { payload, protectedHeader } = await jwtVerify(token, jwks, {
      issuer,
      audience,
      algorithms: ['ES256', 'EdDSA', 'RS256', 'PS256'],
    });
    console.log(JSON.stringify({ header: protectedHeader, payload }));
    return 0;
  } catch (err) {
    console.error(`jose rejected the token: ${err.code ?? err.name}: ${err.message}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
