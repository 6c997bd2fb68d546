// Drives Keyward's JMAP mail service with the npm jmap-jam client, a user token from openid-client
// (authorization code + PKCE through the login form), push read with Node's fetch, and mail
// delivered over LMTP by Python's smtplib.LMTP:
//   1. sign in; jam loads the session; the primary account is the user's;
//   2. an event source is opened; a message is delivered over LMTP; push names EmailDelivery;
//   3. Mailbox/get (inbox counts), Email/query + Email/get with a result reference (requestMany);
//   4. uploadBlob, downloadBlob (bytes round-trip), Email/import of the uploaded message;
//   5. a token forged with the stolen consumer key is refused (401) by the mail service.
// Usage: node jmap_flow.mjs CONFIG_JSON
//   CONFIG_JSON: {"base","issuer","public":{"id"},"redirect_uri","username","password",
//                 "lmtp":{"host","port"},"message_file","forged_token_file"}
// Prints one "PASS name" / "FAIL name: why" line per check; exit 1 if any failed.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as client from 'openid-client';
import JamClient from 'jmap-jam';
import { assert, signIn } from './login.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`PASS ${name}`);
  } catch (e) {
    const why = e?.message ?? JSON.stringify(e);
    console.log(`FAIL ${name}: ${why}${e?.cause ? ` (${JSON.stringify(e.cause)})` : ''}`);
    failed++;
  }
}

const insecure = { execute: [client.allowInsecureRequests] };
let jam;
let token;
let accountId;
let address;
await check('jmap-jam loads the session with a token from the login flow', async () => {
  const pub = await client.discovery(new URL(cfg.issuer), cfg.public.id, undefined, client.None(),
                                     insecure);
  token = (await signIn(pub, cfg, 'openid Mail.Read Mail.ReadWrite')).access_token;
  jam = new JamClient({ sessionUrl: `${cfg.base}/.well-known/jmap`, bearerToken: token });
  const session = await jam.session;
  accountId = await jam.getPrimaryAccount();
  assert(accountId, `no primary account in ${JSON.stringify(session)}`);
  address = session.accounts[accountId].name;
  assert(address?.includes('@'), `account name ${address}`);
  assert(session.capabilities['urn:ietf:params:jmap:core'].maxObjectsInGet > 0, 'core limits');
});

// Reads an event stream with fetch until a `state` event arrives; resolves with its data.
async function nextStateEvent(url, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const r = await fetch(url, { headers: { Authorization: `Bearer ${token}` }, signal: controller.signal });
    assert(r.status === 200, `event source status ${r.status}`);
    assert(r.headers.get('content-type')?.startsWith('text/event-stream'), 'content type');
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let text = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      const m = text.match(/event: state\n(?:id: [^\n]*\n)?data: ([^\n]*)\n\n/);
      if (m) return JSON.parse(m[1]);
    }
    throw new Error(`stream ended without a state event: ${text}`);
  } finally {
    clearTimeout(timer);
  }
}

await check('LMTP delivery (Python smtplib.LMTP) is pushed to an open event source', async () => {
  const session = await jam.session;
  const url = session.eventSourceUrl.replace('{types}', 'EmailDelivery')
    .replace('{closeafter}', 'state').replace('{ping}', '0');
  const pushed = nextStateEvent(url, 10000);
  await new Promise((r) => setTimeout(r, 300));  // the stream is open before the mail arrives
  const out = JSON.parse(execFileSync('python3', [join(here, 'lmtp_send.py'), cfg.lmtp.host,
    String(cfg.lmtp.port), 'sender@example.test', cfg.message_file, address,
    'nobody@nowhere.test'], { encoding: 'utf8' }));
  assert(out.accepted === 1, `LMTP accepted ${out.accepted}: ${JSON.stringify(out)}`);
  assert(out.refused['nobody@nowhere.test']?.[0] === 550, `unknown recipient ${JSON.stringify(out)}`);
  const change = await pushed;
  assert(change['@type'] === 'StateChange', JSON.stringify(change));
  assert(change.changed[accountId]?.EmailDelivery, `no EmailDelivery: ${JSON.stringify(change)}`);
});

let emailId;
await check('Mailbox/get, then Email/query + Email/get joined by a result reference', async () => {
  const [mailboxes] = await jam.api.Mailbox.get({ accountId });
  const inbox = mailboxes.list.find((m) => m.role === 'inbox');
  assert(inbox && inbox.totalEmails === 1, `inbox ${JSON.stringify(inbox)}`);
  const [{ emails }] = await jam.requestMany((t) => {
    const ids = t.Email.query({ accountId, filter: { inMailbox: inbox.id }, limit: 10 });
    const emails = t.Email.get({ accountId, ids: ids.$ref('/ids'),
                                 properties: ['subject', 'from', 'preview', 'messageId'] });
    return { ids, emails };
  });
  assert(emails.list.length === 1, `emails ${JSON.stringify(emails)}`);
  assert(emails.list[0].subject === 'Interop over LMTP', `subject ${emails.list[0].subject}`);
  assert(emails.list[0].from[0].email === 'carol@fabrikam.test', 'from');
  emailId = emails.list[0].id;
});

await check('uploadBlob, downloadBlob and Email/import of the uploaded message', async () => {
  const raw = 'From: Dave <dave@fabrikam.test>\r\nTo: ' + address + '\r\nSubject: Uploaded\r\n' +
    'Message-ID: <upload-1@fabrikam.test>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n' +
    'Imported through Email/import.\r\n';
  const up = await jam.uploadBlob(accountId, new Blob([raw], { type: 'message/rfc822' }));
  assert(up.blobId && up.size === raw.length, `upload ${JSON.stringify(up)}`);
  const down = await jam.downloadBlob({ accountId, blobId: up.blobId, mimeType: 'message/rfc822',
                                        fileName: 'm.eml' });
  assert((await down.text()) === raw, 'downloaded bytes differ');
  const [mailboxes] = await jam.api.Mailbox.get({ accountId });
  const archive = mailboxes.list.find((m) => m.role === 'archive');
  const [imported] = await jam.api.Email.import({
    accountId,
    emails: { k1: { blobId: up.blobId, mailboxIds: { [archive.id]: true }, keywords: { $seen: true } } },
  });
  assert(imported.created?.k1?.id, `import ${JSON.stringify(imported)}`);
  const [got] = await jam.api.Email.get({ accountId, ids: [imported.created.k1.id],
                                          properties: ['subject', 'keywords'] });
  assert(got.list[0].subject === 'Uploaded' && got.list[0].keywords.$seen, JSON.stringify(got));
});

await check('a token forged with the stolen consumer key is refused by the mail service', async () => {
  const forged = readFileSync(cfg.forged_token_file, 'utf8').trim();
  const r = await fetch(`${cfg.base}/.well-known/jmap`, { headers: { Authorization: `Bearer ${forged}` } });
  assert(r.status === 401, `status ${r.status}`);
  assert(r.headers.get('www-authenticate')?.includes('invalid_token'), 'WWW-Authenticate');
  const r2 = await fetch(`${cfg.base}/jmap/api`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${forged}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ using: ['urn:ietf:params:jmap:core', 'urn:ietf:params:jmap:mail'],
                           methodCalls: [['Email/get', { accountId, ids: [emailId] }, 'g']] }),
  });
  assert(r2.status === 401, `API status ${r2.status}`);
});

process.exit(failed ? 1 : 0);
