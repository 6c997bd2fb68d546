// Signs one JWT per algorithm with the npm `jose` library, for Keyward to verify.
//
// Usage: node jose_sign.mjs OUTDIR ISSUER AUDIENCE TENANT
// Writes, for ALG in ES256, EdDSA (Ed25519), RS256, PS256:
//   OUTDIR/jose-ALG.jwks.json  a JWKS holding the one public key (kid, alg, use: "sig")
//   OUTDIR/jose-ALG.jwt        a JWT with iss, aud, sub, tid, iat, nbf, exp (+1 h) and jti,
//                              signed with that key, its kid in the protected header
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { SignJWT, exportJWK, generateKeyPair } from 'jose';

export const ALGORITHMS = ['ES256', 'EdDSA', 'RS256', 'PS256'];

async function main(argv) {
  if (argv.length !== 4) {
    console.error('usage: node jose_sign.mjs OUTDIR ISSUER AUDIENCE TENANT');
    return 2;
  }
  const [outDir, issuer, audience, tenant] = argv;
  for (const alg of ALGORITHMS) {
    const options = { extractable: true };
    if (alg === 'EdDSA') options.crv = 'Ed25519';
    if (alg.startsWith('RS') || alg.startsWith('PS')) options.modulusLength = 2048;
    const { publicKey, privateKey } = await generateKeyPair(alg, options);
    const kid = `jose-${alg}-${randomUUID()}`;
    const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
    writeFileSync(join(outDir, `jose-${alg}.jwks.json`), `${JSON.stringify({ keys: [jwk] })}\n`);

    const now = Math.floor(Date.now() / 1000);
    const jwt = await new SignJWT({ tid: tenant })
      .setProtectedHeader({ alg, kid, typ: 'JWT' })
      .setIssuer(issuer)
      .setAudience(audience)
      .setSubject(`jose-subject-${alg}`)
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + 3600)
      .setJti(randomUUID())
      .sign(privateKey);
    writeFileSync(join(outDir, `jose-${alg}.jwt`), `${jwt}\n`);
  }
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
