// Drives a running `keyward serve` with the npm openid-client (v6) and jose libraries, as any
// OAuth/OIDC application would:
//   1. discovery of the enterprise issuer;
//   2. client_credentials with a confidential client;
//   3. authorization code with PKCE for a public client, signing in through the login form;
//   4. refresh (rotating) and reuse of the old refresh token (refused);
//   5. every access token verified by jose's createRemoteJWKSet against the issuer's JWKS.
// Usage: node oidc_flow.mjs CONFIG_JSON OUT_DIR
//   CONFIG_JSON: {"issuer","audience","confidential":{"id","secret"},"public":{"id"},
//                 "redirect_uri","username","password"}
// Writes OUT_DIR/tokens.txt (one access token per line) for Keyward's own verifier, and prints
// one "PASS name" / "FAIL name: why" line per check. Exit 1 if any check failed.
import { readFileSync, writeFileSync } from 'node:fs';
import * as client from 'openid-client';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { assert, signIn } from './login.mjs';

const [, , configPath, outDir] = process.argv;
const cfg = JSON.parse(readFileSync(configPath, 'utf8'));
let failed = 0;
const pass = (name) => console.log(`PASS ${name}`);
const fail = (name, why) => {
  console.log(`FAIL ${name}: ${why}`);
  failed++;
};
async function check(name, fn) {
  try {
    await fn();
    pass(name);
  } catch (e) {
    fail(name, e?.message ?? String(e));
  }
}

const issuer = new URL(cfg.issuer);
const insecure = { execute: [client.allowInsecureRequests] };  // loopback http only
const tokens = [];
const jwks = createRemoteJWKSet(new URL(`${cfg.issuer}/keys`));
async function verifyWithJose(accessToken, name) {
  const { payload, protectedHeader } = await jwtVerify(accessToken, jwks, {
    issuer: cfg.issuer,
    audience: cfg.audience,
  });
  assert(protectedHeader.kid, `${name}: no kid in the header`);
  for (const claim of ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti', 'tid', 'azp', 'scp']) {
    assert(payload[claim] !== undefined, `${name}: claim ${claim} missing`);
  }
  assert(payload.exp - payload.iat <= 3600, `${name}: lifetime over one hour`);
  return payload;
}

let confidential;
await check('openid-client discovery (confidential client)', async () => {
  confidential = await client.discovery(issuer, cfg.confidential.id, cfg.confidential.secret,
                                        client.ClientSecretPost(), insecure);
  const md = confidential.serverMetadata();
  assert(md.issuer === cfg.issuer, `issuer ${md.issuer}`);
  assert(md.code_challenge_methods_supported?.includes('S256'), 'S256 not advertised');
});

await check('client_credentials via openid-client, verified by jose createRemoteJWKSet',
            async () => {
  const t = await client.clientCredentialsGrant(confidential, { scope: 'Mail.Read' });
  assert(t.token_type.toLowerCase() === 'bearer', `token_type ${t.token_type}`);
  const payload = await verifyWithJose(t.access_token, 'client_credentials');
  assert(payload.azp === cfg.confidential.id, `azp ${payload.azp}`);
  assert(payload.scp === 'Mail.Read', `scp ${payload.scp}`);
  tokens.push(t.access_token);
});

await check('client_credentials with a wrong secret is refused (invalid_client)', async () => {
  const wrong = await client.discovery(issuer, cfg.confidential.id, 'wrong-secret',
                                       client.ClientSecretBasic(), insecure);
  try {
    await client.clientCredentialsGrant(wrong);
  } catch (e) {
    // A 401 with a Basic challenge surfaces as the challenge; the body still names the error.
    assert(e.status === 401, `status ${e.status}`);
    const body = e.response ? await e.response.json() : { error: e.error };
    assert(body.error === 'invalid_client', `error ${body.error}`);
    return;
  }
  throw new Error('a wrong secret was accepted');
});

let pub;
let codeTokens;
await check('authorization code + PKCE through the login form (public client)', async () => {
  pub = await client.discovery(issuer, cfg.public.id, undefined, client.None(), insecure);
  codeTokens = await signIn(pub, cfg, 'openid Mail.Read');
  const claims = codeTokens.claims();
  assert(codeTokens.refresh_token, 'no refresh token');
  const payload = await verifyWithJose(codeTokens.access_token, 'authorization_code');
  assert(payload.sub === claims.sub, 'access token and ID token name different users');
  tokens.push(codeTokens.access_token);
});

await check('refresh_token rotation via openid-client; the old refresh token is refused',
            async () => {
  const refreshed = await client.refreshTokenGrant(pub, codeTokens.refresh_token);
  assert(refreshed.refresh_token && refreshed.refresh_token !== codeTokens.refresh_token,
         'the refresh token did not rotate');
  await verifyWithJose(refreshed.access_token, 'refresh_token');
  tokens.push(refreshed.access_token);
  try {
    await client.refreshTokenGrant(pub, codeTokens.refresh_token);
  } catch (e) {
    assert(e.error === 'invalid_grant', `reuse gave ${e.error}`);
    // Reuse revoked the family: the rotated refresh token is dead too.
    try {
      await client.refreshTokenGrant(pub, refreshed.refresh_token);
    } catch (e2) {
      assert(e2.error === 'invalid_grant', `family member gave ${e2.error}`);
      return;
    }
    throw new Error('the family survived a reused refresh token');
  }
  throw new Error('a used refresh token was accepted again');
});

await check('PKCE mismatch is refused (invalid_grant)', async () => {
  const verifier = client.randomPKCECodeVerifier();
  const url = client.buildAuthorizationUrl(pub, {
    redirect_uri: cfg.redirect_uri,
    scope: 'openid',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  });
  const body = new URLSearchParams(url.searchParams);
  body.set('username', cfg.username);
  body.set('password', cfg.password);
  const r = await fetch(`${cfg.issuer}/authorize`, { method: 'POST', body, redirect: 'manual' });
  const location = new URL(r.headers.get('location'));
  try {
    await client.authorizationCodeGrant(pub, location, {
      pkceCodeVerifier: client.randomPKCECodeVerifier(),
      idTokenExpected: true,
    });
  } catch (e) {
    assert(e.error === 'invalid_grant', `error ${e.error}`);
    return;
  }
  throw new Error('a wrong code_verifier was accepted');
});

writeFileSync(`${outDir}/tokens.txt`, tokens.join('\n') + '\n');
process.exit(failed ? 1 : 0);
