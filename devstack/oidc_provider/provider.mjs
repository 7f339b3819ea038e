// A real, OpenID-certified provider (panva/oidc-provider) for dna_hub's tests.
//
// Usage: node provider.mjs <config.json>
//
// The config file (written by devstack/oidc_stack.py) holds:
//   port       TCP port on 127.0.0.1 to listen on (0 = any free port)
//   issuer     optional issuer string; default http://127.0.0.1:<port>. A different value
//              makes an impostor that signs tokens claiming someone else's issuer.
//   keys       private signing JWKs (the fixture generates them so two instances can share
//              or deliberately not share a key under the same `kid`)
//   clients    static clients (client_id, client_secret, redirect_uris, ...)
//   accounts   { login: { claims: {...}, idToken?: {...}, userinfo?: {...} } }; the
//              devInteractions form accepts any password. `idToken` / `userinfo` override
//              claims for that use only (a null value removes the claim), e.g. a userinfo
//              without `groups`, as providers that keep groups in the id_token send it.
//              Any other login (the form says "Enter any login") is a plain user with a
//              verified email and no groups, so a hub refuses it politely (no allowed group).
//   ttl        token lifetimes in seconds (AccessToken, IdToken, RefreshToken, ...)
//   storeSize  entries the in-memory store keeps (default 1,000,000; oidc-provider's own
//              default, 1000, evicts live refresh tokens past ~150 logged-in users)
//   modulesDir where `npm ci` put node_modules (the fixture installs into a cache dir)
//   hostile    optional misbehaviours for tests (all off unless set):
//              tokenType  the token_type every token response claims (e.g. "N_A")
//              weakKey    a private RSA JWK (e.g. 1024 bits, which oidc-provider refuses to
//                         sign with): id_tokens are re-signed with it and /jwks serves it
//              noRefreshIdToken  refresh grants answer without an id_token (as some IdPs do)
//              refreshOnly  tokenType and weakKey apply to refresh grants only (logins work;
//                         /jwks then serves the weak key next to the real ones)
//
// Test-only admin endpoint: POST /__test/accounts/<login> with a JSON body
// {"claims": {...}} replaces that account's claims (e.g. removes it from its groups);
// {"claims": null} deletes the account: as at a real provider, its later grants (refresh,
// userinfo) fail — it is not treated as an unknown demo login.
// POST /__test/outage {"down": true} makes every other request answer 503 (an IdP outage)
// until {"down": false}.
//
// Once listening it prints one line `READY <issuer> <base-url>` on stdout.
// Test-only conveniences: open dynamic client registration (RFC 7591) so every hub under
// test registers its own exact redirect URIs, and refresh tokens without `prompt=consent`
// (as corporate IdPs such as Keycloak issue them).

import { readFileSync } from 'node:fs';
import { createPrivateKey, createPublicKey, randomBytes, sign } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const modulesDir = config.modulesDir || fileURLToPath(new URL('./node_modules/', import.meta.url));
const pkg = JSON.parse(readFileSync(join(modulesDir, 'oidc-provider', 'package.json'), 'utf8'));
const { default: Provider } = await import(
  pathToFileURL(join(modulesDir, 'oidc-provider', pkg.main || 'lib/index.js')).href
);
// oidc-provider's default store (its development MemoryAdapter) is an LRU of 1000 entries:
// each logged-in user holds ~6 (session, grant, codes, tokens), so past ~150 users it evicts
// live grants and refresh tokens, and the hub's re-checks fail with `invalid_grant` — the
// store forgetting, not the provider refusing. Same adapter, with room for every user
// (entries still expire with their tokens).
const lib = (path) => pathToFileURL(join(modulesDir, 'oidc-provider', 'lib', path)).href;
const { default: MemoryAdapter } = await import(lib('adapters/memory_adapter.js'));
const { default: LRU } = await import(lib('helpers/lru.js'));
const store = new LRU({ maxSize: config.storeSize || 1_000_000 });

const accounts = config.accounts || {};
// Accounts deleted through the test endpoint: gone, not "any other login".
const deleted = new Set();
// A login that is not in `accounts`: authenticated, but in no group.
const unknownAccount = (id) => ({
  claims: { preferred_username: id, email: `${id}@unknown.example`, email_verified: true, groups: [] },
});
const ttl = config.ttl || {};
const host = '127.0.0.1';

function start(port) {
  return new Promise((resolve, reject) => {
    // Listen first so an ephemeral port can be part of the default issuer.
    import('node:http').then(({ createServer }) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(port, host, () => resolve(server));
    });
  });
}

const server = await start(config.port || 0);
const base = `http://${host}:${server.address().port}`;
const issuer = config.issuer || base;

const provider = new Provider(issuer, {
  clients: config.clients || [],
  jwks: { keys: config.keys },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  adapter: (model) => new MemoryAdapter(model, store),
  async findAccount(ctx, id) {
    if (deleted.has(id)) return undefined;
    const account = Object.hasOwn(accounts, id) ? accounts[id] : unknownAccount(id);
    return {
      accountId: id,
      async claims(use) {
        const claims = { ...account.claims };
        const override = use === 'id_token' ? account.idToken : account.userinfo;
        for (const [name, value] of Object.entries(override || {})) {
          if (value === null) delete claims[name];
          else claims[name] = value;
        }
        return { ...claims, sub: id };
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  // Put the scope claims (email, groups, ...) into the id_token, as many IdPs do.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    registration: { enabled: true },
  },
  // Our client must always send PKCE; make the provider insist on it.
  pkce: { required: () => true },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  clockTolerance: 0,
  ttl: {
    AccessToken: ttl.AccessToken ?? 3600,
    AuthorizationCode: ttl.AuthorizationCode ?? 60,
    IdToken: ttl.IdToken ?? 3600,
    RefreshToken: ttl.RefreshToken ?? 86400,
    Interaction: ttl.Interaction ?? 600,
    Session: ttl.Session ?? 86400,
    Grant: ttl.Grant ?? 86400,
  },
});

provider.on('server_error', (ctx, err) => console.error('server_error', err));

const hostile = config.hostile || {};
const b64url = (data) => Buffer.from(data).toString('base64url');
if (hostile.tokenType || hostile.weakKey || hostile.noRefreshIdToken) {
  provider.use(async (ctx, next) => {
    await next();
    const body = ctx.body;
    const refreshing = ctx.oidc?.params?.grant_type === 'refresh_token';
    if (ctx.path === '/token' && body && typeof body === 'object'
        && (refreshing || !hostile.refreshOnly)) {
      if (hostile.tokenType) body.token_type = hostile.tokenType;
      if (hostile.noRefreshIdToken && refreshing) {
        delete body.id_token;
      }
      if (hostile.weakKey && body.id_token) {
        const payload = body.id_token.split('.')[1];
        const header = b64url(
          JSON.stringify({ alg: 'RS256', typ: 'JWT', kid: hostile.weakKey.kid })
        );
        const key = createPrivateKey({ key: hostile.weakKey, format: 'jwk' });
        const signature = sign('sha256', Buffer.from(`${header}.${payload}`), key);
        body.id_token = `${header}.${payload}.${b64url(signature)}`;
      }
    }
    if (ctx.path === '/jwks' && hostile.weakKey) {
      const pub = createPublicKey({ key: hostile.weakKey, format: 'jwk' }).export({ format: 'jwk' });
      const weak = { ...pub, kid: hostile.weakKey.kid, use: 'sig', alg: 'RS256' };
      const current = typeof body === 'string' ? JSON.parse(body) : body;
      ctx.body = { keys: [...(hostile.refreshOnly ? current?.keys ?? [] : []), weak] };
    }
  });
}

const callback = provider.callback();
let down = false;
server.on('request', (req, res) => {
  if (req.method === 'POST' && req.url === '/__test/outage') {
    let data = '';
    req.on('data', (chunk) => { data += chunk; });
    req.on('end', () => {
      down = Boolean(JSON.parse(data || '{}').down);
      res.writeHead(204).end();
    });
    return undefined;
  }
  if (down) return res.writeHead(503, { 'content-type': 'text/plain' }).end('outage');
  const match = req.method === 'POST' && req.url.match(/^\/__test\/accounts\/([^/?]+)$/);
  if (!match) return callback(req, res);
  let data = '';
  req.on('data', (chunk) => { data += chunk; });
  req.on('end', () => {
    const login = decodeURIComponent(match[1]);
    const { claims } = JSON.parse(data || '{}');
    if (claims === null) {
      delete accounts[login];
      deleted.add(login);
    } else {
      accounts[login] = { ...accounts[login], claims };
      deleted.delete(login);
    }
    res.writeHead(204).end();
  });
  return undefined;
});
process.stdout.write(`READY ${issuer} ${base}\n`);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
