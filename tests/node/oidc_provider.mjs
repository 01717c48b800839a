// A real OpenID provider for the tests: panva's certified `oidc-provider`, on loopback.
//
//   OIDC_TEST_PORT=<port> node tests/node/oidc_provider.mjs
//
// The issuer is http://127.0.0.1:<port>. It prints "ready" once it listens. Clients register
// through standard dynamic registration (POST /reg), so every test app registers its own
// redirect URI. The login and consent pages are the provider's own development pages: any
// login name with any password signs in as the account of that name.
//
// Two test-only endpoints, outside anything a real provider offers:
//   POST /test/accounts {sub, email, email_verified}  adds or replaces an account's claims;
//   POST /test/tamper {mode}                           makes the next token response carry a
//     forged ID token: "signature" (signed by another key under the same kid), "audience"
//     (correctly signed, issued to another client) or "nonce" (correctly signed, wrong nonce).
import http from 'node:http';

import * as jose from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_TEST_PORT);
const issuer = `http://127.0.0.1:${port}`;
const KID = 'test-signing-key';

const accounts = new Map();
let tamperMode = null;

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid: KID, alg: 'RS256', use: 'sig' };
const { privateKey: foreignKey } = await jose.generateKeyPair('RS256');

const provider = new Provider(issuer, {
  jwks: { keys: [signingJwk] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  // Every client must use PKCE, so a relying party that forgot it fails the tests.
  pkce: { required: () => true },
  async findAccount(ctx, sub) {
    const claims = accounts.get(sub);
    if (!claims) return undefined;
    return { accountId: sub, claims: async () => ({ sub, ...claims }) };
  },
});

async function forge(idToken) {
  const claims = jose.decodeJwt(idToken);
  let key = privateKey;
  if (tamperMode === 'signature') key = foreignKey;
  if (tamperMode === 'audience') claims.aud = 'another-client';
  if (tamperMode === 'nonce') claims.nonce = 'not-the-nonce-that-was-sent';
  return new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: KID }).sign(key);
}

provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && tamperMode && ctx.body && ctx.body.id_token) {
    ctx.body = { ...ctx.body, id_token: await forge(ctx.body.id_token) };
    tamperMode = null;
  }
});

async function readJson(req) {
  let text = '';
  for await (const chunk of req) text += chunk;
  return JSON.parse(text || '{}');
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  if (req.method === 'POST' && req.url === '/test/accounts') {
    const { sub, ...claims } = await readJson(req);
    accounts.set(sub, claims);
    res.writeHead(204).end();
    return;
  }
  if (req.method === 'POST' && req.url === '/test/tamper') {
    tamperMode = (await readJson(req)).mode || null;
    res.writeHead(204).end();
    return;
  }
  callback(req, res);
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write('ready\n');
});
