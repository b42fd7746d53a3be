// The admin API's view of the auth service: callers sign in with Basic credentials or a token
// issued for the admin API (Bearer, scope berth:admin:*), and every admin operation is a policy
// decision on an admin action. A registry token (repository:x:pull, ...) is refused here: a token
// leaked from a pull is no admin credential, whoever it belongs to.
import { type Auth, AuthError, adminScopeText, type Identity, reasonCode } from '../auth/index.ts';
import type { AdminDeps } from './admin.ts';
import { ApiError } from './admin-kit.ts';
import { basicCredentials, requestInfo } from './caller.ts';

type Caller = Identity & { readonly subject: string };

export function adminAuth(auth: Auth, service: string): AdminDeps<Caller> {
  const caller = (identity: Identity): Caller => ({
    ...identity,
    subject: `${identity.principal.type}/${identity.principal.name}`,
  });
  return {
    identities: auth.identities,
    policies: auth.policies,
    federation: auth.federation,
    audit: auth.audit,
    bearerService: service,
    bearerScope: adminScopeText,
    async authenticate(c) {
      if (!auth.enabled) return caller(auth.anonymous());
      const header = c.req.header('authorization') ?? '';
      if (/^bearer /i.test(header)) {
        const bearer = await auth.authenticateBearer(header.slice(7).trim(), requestInfo(c));
        const admin = bearer.access.find((e) => e.type === 'berth' && e.name === 'admin');
        if (!admin)
          throw new AuthError(
            'invalid-token',
            `the token was not issued for the admin API: ask the token service for scope ${adminScopeText}`,
            { detail: 'insufficient-scope' },
          );
        if (!admin.actions.includes('*'))
          throw new ApiError(
            'FORBIDDEN',
            `the token service refused scope ${adminScopeText}: no policy allows ${bearer.principal.type} ${bearer.principal.name} an action of the admin API`,
            { reason: 'no_allow' },
          );
        return caller(bearer);
      }
      if (/^basic /i.test(header)) {
        const creds = basicCredentials(header);
        if (!creds) return undefined;
        return caller(await auth.authenticateBasic(creds.username, creds.secret, requestInfo(c)));
      }
      return undefined;
    },
    async authorize(who, action, resource, c) {
      const d = await auth.authorize(who, action, resource, requestInfo(c));
      return { effect: d.effect, reason: reasonCode(d) };
    },
    simulate: (input) => auth.simulate(input),
    revokeSessions: (subject) => auth.revokeSessions(subject),
  };
}
