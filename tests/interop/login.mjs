// Signing in through Keyward's login form with openid-client: authorization code + PKCE for a
// public client, as a browser user would (load the form, fill it in, submit, follow the redirect).
import * as client from 'openid-client';

export function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Returns openid-client's token response. `pub` is the client's discovered configuration.
export async function signIn(pub, cfg, scope) {
  const verifier = client.randomPKCECodeVerifier();
  const challenge = await client.calculatePKCECodeChallenge(verifier);
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(pub, {
    redirect_uri: cfg.redirect_uri,
    scope,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  const page = await fetch(url, { redirect: 'manual' });
  assert(page.status === 200, `login form status ${page.status}`);
  const html = await page.text();
  const action = html.match(/<form method="post" action="([^"]+)"/)?.[1];
  assert(action, 'no form in the login page');
  const fields = new URLSearchParams();
  for (const m of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
    fields.set(m[1], m[2].replaceAll('&amp;', '&').replaceAll('&quot;', '"')
                         .replaceAll('&#39;', "'").replaceAll('&lt;', '<').replaceAll('&gt;', '>'));
  }
  fields.set('username', cfg.username);
  fields.set('password', cfg.password);
  const submitted = await fetch(action.replaceAll('&amp;', '&'), {
    method: 'POST',
    body: fields,
    redirect: 'manual',
  });
  assert(submitted.status === 303, `login status ${submitted.status}`);
  const location = submitted.headers.get('location');
  assert(location?.startsWith(cfg.redirect_uri), `redirect to ${location}`);
  const tokens = await client.authorizationCodeGrant(pub, new URL(location), {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  assert(claims?.nonce === nonce, 'ID token nonce');
  assert(claims?.aud === cfg.public.id, `ID token aud ${claims?.aud}`);
  return tokens;
}
