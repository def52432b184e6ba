// A real OpenID Provider (panva's oidc-provider) for the tests of require2fa.sso, on loopback.
//
//   node tests/oidc/provider.mjs CONFIG_JSON
//
// CONFIG_JSON: {"clients": [oidc-provider client metadata, ...]}. The server listens on a free
// port of 127.0.0.1 and prints one line `ready http://127.0.0.1:PORT` (the issuer) on stdout.
//
// Sign-ins are scripted: there is no login form. A test says who the next sign-in is with
//   POST /admin/next-login {"sub", "email", "email_verified", "amr": [...], "acr", "name"}
// (a queue: each interaction takes the oldest entry) and the interaction completes at once,
// login and consent together. Other admin endpoints (loopback only, like the whole server):
//   POST /admin/rotate-key  a new RS256 signing key: the JWKS keeps the old key after the new
//                           one, and ID tokens from then on carry the new `kid`; answers {kid}
//   POST /admin/tamper      {claims}: the next token response's ID token carries these claims
//                           instead (re-signed with the provider's current key), to show that
//                           the relying party checks what the provider would never send
//   GET  /admin/jwks        the public signing keys (what /jwks answers)

import http from 'node:http';
import { randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';
import * as jose from 'jose';

const config = JSON.parse(process.argv[2] ?? '{}');
const nextLogins = [];
const accounts = new Map();
let tamper = null;
let keys = [];
let provider;

async function newKey() {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

function build(issuer) {
  // The default in-memory adapter keeps its storage per process, so sessions, codes and grants
  // survive a rebuild with other keys.
  const built = new Provider(issuer, {
    clients: config.clients ?? [],
    jwks: { keys },
    features: { devInteractions: { enabled: false } },
    // Scope claims (email, email_verified, name) go into the ID token itself.
    conformIdTokenClaims: false,
    claims: {
      // acr and amr with every ID token (by default only when the client asks for them).
      openid: ['sub', 'acr', 'amr'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    acrValues: ['phr', 'phrh', 'urn:example:password'],
    pkce: { required: () => true },
    scopes: ['openid', 'email', 'profile'],
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, sub) {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: account.email,
            email_verified: account.email_verified,
            name: account.name,
          };
        },
      };
    },
    cookies: { keys: ['test-only-cookie-key'] },
  });
  built.use(tamperTokens);
  return built;
}

// Koa middleware: rewrites the next token response's ID token when a test asked for it.
async function tamperTokens(ctx, next) {
  await next();
  if (!tamper || ctx.path !== '/token' || ctx.status !== 200 || !ctx.body?.id_token) return;
  const claims = { ...jose.decodeJwt(ctx.body.id_token), ...tamper };
  tamper = null;
  const [signing] = keys;
  const key = await jose.importJWK(signing, 'RS256');
  ctx.body = {
    ...ctx.body,
    id_token: await new jose.SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: signing.kid })
      .sign(key),
  };
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  let accountId = session?.accountId;
  const result = {};
  if (prompt.name === 'login' || !accountId) {
    const login = nextLogins.shift() ?? { sub: 'default-user', email: 'default@example.com' };
    accountId = String(login.sub);
    accounts.set(accountId, {
      email: login.email,
      email_verified: login.email_verified ?? true,
      name: login.name ?? accountId,
    });
    result.login = { accountId, amr: login.amr, acr: login.acr, remember: false };
  }
  const grant = new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(params.scope);
  result.consent = { grantId: await grant.save() };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

function body(req) {
  return new Promise((resolve, reject) => {
    let text = '';
    req.on('data', (chunk) => { text += chunk; });
    req.on('end', () => { try { resolve(text ? JSON.parse(text) : {}); } catch (e) { reject(e); } });
    req.on('error', reject);
  });
}

function json(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

async function admin(req, res, issuer) {
  const path = new URL(req.url, issuer).pathname;
  if (req.method === 'POST' && path === '/admin/next-login') {
    nextLogins.push(await body(req));
    return json(res, 200, { queued: nextLogins.length });
  }
  if (req.method === 'POST' && path === '/admin/rotate-key') {
    keys = [await newKey(), ...keys];
    provider = build(issuer);
    return json(res, 200, { kid: keys[0].kid });
  }
  if (req.method === 'POST' && path === '/admin/tamper') {
    tamper = (await body(req)).claims ?? null;
    return json(res, 200, {});
  }
  if (req.method === 'GET' && path === '/admin/jwks') {
    return json(res, 200, { keys: keys.map(({ kty, n, e, kid, alg, use }) => ({ kty, n, e, kid, alg, use })) });
  }
  return json(res, 404, { error: 'not found' });
}

keys = [await newKey()];
const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  provider = build(issuer);
  server.on('request', async (req, res) => {
    try {
      if (req.url.startsWith('/admin/')) return await admin(req, res, issuer);
      if (req.url.startsWith('/interaction/')) return await interaction(req, res);
      return provider.callback()(req, res);
    } catch (err) {
      if (!res.headersSent) json(res, 500, { error: String(err) });
      return undefined;
    }
  });
  process.stdout.write(`ready ${issuer}\n`);
});

// The test suite closes our stdin when it is done: stop then, whatever killed it.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
