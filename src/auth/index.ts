// Public surface of auth/: what http/ and main.ts may use. Identities, policies, tokens,
// federation and audit are framework-free; http/ maps them onto /token, /v2 and the admin API.
export { type ActionInfo, type ActionName, actions, canonicalAction, isKnownAction } from './actions.ts';
export {
  type AuditEntry,
  type AuditEvent,
  type AuditEventType,
  AuditIntegrityError,
  type AuditLog,
  type AuditQuery,
  type AuditVerification,
} from './audit.ts';
export {
  type AddProviderInput,
  type Federation,
  FederationError,
  type FederationErrorReason,
  type OidcProvider,
  ProviderError,
} from './federation.ts';
export {
  type AccessKeyInfo,
  type AccessKeyOwner,
  type AccessKeyStatus,
  AuthStoreError,
  type AuthStoreErrorCode,
  type CreateRoleInput,
  type CreateServiceAccountInput,
  type CreateUserInput,
  type Group,
  type IdentityStore,
  type ListOptions,
  type NewAccessKey,
  type Page,
  type PrincipalInfo,
  type Role,
  type ServiceAccount,
  type SigningKey,
  type UpdateRolePatch,
  type UpdateServiceAccountPatch,
  type UpdateUserPatch,
  type User,
} from './identities.ts';
export {
  type AccessRequest,
  type Decision,
  type MatchedStatement,
  type Policy,
  type PolicyError,
  type Principal,
  type PrincipalType,
  reasonCode,
  validatePolicy,
} from './policy.ts';
export type {
  AttachmentTarget,
  AttachmentTargetType,
  ManagedPolicy,
  PolicyStore,
  RepositoryPolicy,
} from './policy-store.ts';
export {
  adminScopeText,
  formatScope,
  parseScope,
  parseScopes,
  type Scope,
  type ScopeAction,
} from './scope.ts';
export {
  type Auth,
  AuthError,
  type AuthErrorReason,
  type AuthMethod,
  type AuthOptions,
  administratorPolicyName,
  createAuth,
  devPrincipalName,
  type Identity,
  type IdentityPrincipal,
  type IssuedAccessToken,
  type IssueTokenOptions,
  principalRef,
  type RequestInfo,
  type SimulatedStatement,
  type SimulateInput,
} from './service.ts';
export {
  SigV4Error,
  type SigV4ErrorCode,
  type SigV4Request,
  sigV4Messages,
} from './sigv4.ts';
export {
  type AccessEntry,
  type Claims,
  type IssuedToken,
  type Jwk,
  type JwkSet,
  TokenError,
  type TokenErrorReason,
  type TokenService,
} from './tokens.ts';
export { validateTrustPolicy } from './trust.ts';
