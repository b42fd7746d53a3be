// The admin REST API, mounted by the app under /api/v1 (openapi.yaml is its contract):
//
//   app.route(adminApiBase, createAdminApi(deps))
//
// Every route authenticates the caller (401 with Basic and Bearer challenges; a Bearer token must
// have been issued for scope berth:admin:*, which the challenge names), authorizes one
// admin action of the catalog on a resource (403 with a reason code, audited), and audits every
// change with its outcome. Errors have one shape: { error: { code, message, reason?, details? } }.
//
// Resources, as policies name them: `user/<name>`, `group/<name>`, `role/<name>`,
// `serviceaccount/<name>`, `policy/<name>`, `repository/<scope>`, `oidc/<id>`, `audit`; a list is
// authorized on its collection (`user/*`). Attaching a policy needs admin:AttachPolicy (or
// DetachPolicy) on both the identity and `policy/<name>`, so a right to attach to someone is not
// a right to attach any policy there.
import type { Context } from 'hono';
import { Hono } from 'hono';
import type { AuditLog, Federation, IdentityStore, PolicyStore } from '../auth/index.ts';
import type { Runner } from '../runner/index.ts';
import { identityRoutes } from './admin-identities.ts';
import { adminErrorResponse, createKit } from './admin-kit.ts';
import { policyRoutes } from './admin-policies.ts';
import { runnerRoutes } from './admin-runner.ts';
import type { AppEnv } from './env.ts';

export const adminApiBase = '/api/v1';

/** Who is calling, as `authenticate` found them. */
export interface AdminCaller {
  readonly principal: { readonly type: string; readonly name: string; readonly groups: readonly string[] };
  /** How the audit log names the caller; default `<type>/<name>`. */
  readonly subject?: string;
}

export interface AdminDecision {
  readonly effect: 'Allow' | 'Deny';
  /** A short code safe to show the caller (e.g. `no_allow`, `explicit_deny`), never policy text. */
  readonly reason: string;
}

export interface SimulationInput {
  readonly principal: {
    readonly type: 'user' | 'serviceaccount' | 'role' | 'anonymous';
    readonly name: string;
  };
  readonly action: string;
  readonly resource: string;
  readonly context: Readonly<Record<string, string | readonly string[]>>;
}

export interface SimulationOutput {
  readonly effect: 'Allow' | 'Deny';
  readonly reason: string;
  readonly matched: readonly {
    readonly policyId: string;
    readonly sid?: string;
    readonly statementIndex: number;
    readonly effect: 'Allow' | 'Deny';
  }[];
}

/**
 * What the admin API needs. `C` is whatever `authenticate` returns (at least an AdminCaller); it is
 * handed back to `authorize` as it was, so the wiring can carry its own principal type through.
 */
export interface AdminDeps<C extends AdminCaller = AdminCaller> {
  readonly identities: IdentityStore;
  readonly policies: PolicyStore;
  readonly federation: Federation;
  readonly audit: AuditLog;
  /**
   * Who is calling: the caller from the request (Bearer registry token or Basic), or undefined
   * when there are none (401). It may throw: an error with a numeric `retryAfterSeconds` (AuthError
   * 'throttled') becomes 429 with Retry-After; any other AuthError, or a TokenError, becomes 401
   * (with `error="invalid_token"` for a bad token); anything else is an internal error (500).
   */
  authenticate(c: Context<AppEnv>): Promise<C | undefined>;
  /** Decision for an admin action of the catalog (e.g. 'admin:CreateUser') on a resource ('user/alice'). */
  authorize(caller: C, action: string, resource: string, c: Context<AppEnv>): Promise<AdminDecision>;
  /** Evaluates a hypothetical request against the stored policies; may throw AuthStoreError NOT_FOUND. */
  simulate(input: SimulationInput): Promise<SimulationOutput>;
  /**
   * Revokes the refresh tokens of a subject, `<type>/<name>` (`user/alice`, `serviceaccount/ci`):
   * called after a password change, disabling, an access key's deletion, and deletion.
   */
  revokeSessions?(subject: string): Promise<void>;
  /** The Bearer challenge's realm; default `<origin>/token`. */
  bearerRealm?(c: Context<AppEnv>): string;
  /** The Bearer challenge's service; default `berth`. */
  readonly bearerService?: string;
  /** The scope a Bearer token must carry, named in the challenge (`berth:admin:*`). */
  readonly bearerScope?: string;
}

export function createAdminApi<C extends AdminCaller>(deps: AdminDeps<C>, runner?: Runner): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  // Set before the routes are mounted: app.route() copies the handler it finds then.
  app.onError(adminErrorResponse);
  const kit = createKit(deps);
  identityRoutes(app, kit);
  policyRoutes(app, kit);
  if (runner) runnerRoutes(app, kit, runner);
  return app;
}
