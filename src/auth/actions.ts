// Every action a policy can name. Policies are validated against this list, so an action that is
// not here can be neither granted nor denied; adding an endpoint means adding its action first.

export interface ActionInfo {
  readonly name: string;
  readonly description: string;
}

export const actions = [
  { name: 'registry:Pull', description: 'Read manifests and blobs of a repository' },
  { name: 'registry:Push', description: 'Upload blobs and manifests to a repository' },
  { name: 'registry:Delete', description: 'Delete manifests, tags or blobs of a repository' },
  {
    name: 'registry:OverwriteTag',
    description: 'Push a tag that already points at a different manifest (deny it for immutable tags)',
  },
  { name: 'registry:ListTags', description: 'List the tags of a repository' },
  { name: 'registry:Catalog', description: 'List repositories' },
  { name: 'registry:ListReferrers', description: 'List the referrers of a manifest' },

  { name: 'admin:CreateUser', description: 'Create a user' },
  { name: 'admin:GetUser', description: 'Read a user' },
  { name: 'admin:ListUsers', description: 'List users' },
  { name: 'admin:UpdateUser', description: 'Change a user (password, tags, groups)' },
  { name: 'admin:DeleteUser', description: 'Delete a user' },
  { name: 'admin:CreateGroup', description: 'Create a group' },
  { name: 'admin:GetGroup', description: 'Read a group and its members' },
  { name: 'admin:ListGroups', description: 'List groups' },
  { name: 'admin:UpdateGroup', description: 'Change a group or its members' },
  { name: 'admin:DeleteGroup', description: 'Delete a group' },
  { name: 'admin:CreateRole', description: 'Create a role' },
  { name: 'admin:GetRole', description: 'Read a role' },
  { name: 'admin:ListRoles', description: 'List roles' },
  { name: 'admin:UpdateRole', description: 'Change a role or its trust rules' },
  { name: 'admin:DeleteRole', description: 'Delete a role' },
  { name: 'admin:CreateServiceAccount', description: 'Create a service account' },
  { name: 'admin:GetServiceAccount', description: 'Read a service account' },
  { name: 'admin:ListServiceAccounts', description: 'List service accounts' },
  { name: 'admin:UpdateServiceAccount', description: 'Change a service account' },
  { name: 'admin:DeleteServiceAccount', description: 'Delete a service account' },
  { name: 'admin:CreateAccessKey', description: 'Create an access key for a user or service account' },
  { name: 'admin:ListAccessKeys', description: 'List access keys (never their secrets)' },
  { name: 'admin:UpdateAccessKey', description: 'Deactivate or reactivate an access key' },
  { name: 'admin:DeleteAccessKey', description: 'Revoke an access key' },
  { name: 'admin:PutPolicy', description: 'Create or replace an identity policy' },
  { name: 'admin:GetPolicy', description: 'Read an identity policy' },
  { name: 'admin:ListPolicies', description: 'List identity policies' },
  { name: 'admin:DeletePolicy', description: 'Delete an identity policy' },
  { name: 'admin:AttachPolicy', description: 'Attach a policy to a user, group, role or service account' },
  { name: 'admin:DetachPolicy', description: 'Detach a policy from a user, group, role or service account' },
  {
    name: 'admin:PutRepositoryPolicy',
    description: 'Create or replace the policy of a repository or prefix',
  },
  { name: 'admin:GetRepositoryPolicy', description: 'Read the policy of a repository or prefix' },
  { name: 'admin:DeleteRepositoryPolicy', description: 'Delete the policy of a repository or prefix' },
  { name: 'admin:SimulatePolicy', description: 'Evaluate a hypothetical request against the policies' },
  { name: 'admin:CreateOidcProvider', description: 'Trust an OIDC identity provider' },
  { name: 'admin:GetOidcProvider', description: 'Read a trusted OIDC identity provider' },
  { name: 'admin:ListOidcProviders', description: 'List trusted OIDC identity providers' },
  { name: 'admin:DeleteOidcProvider', description: 'Stop trusting an OIDC identity provider' },
  { name: 'admin:ReadAudit', description: 'Read the audit log' },
  { name: 'admin:ListActions', description: 'List the action catalog' },

  { name: 'iam:PassRole', description: 'Start tasks or services that run with a role (resource role/NAME)' },

  { name: 'ecs:CreateCluster', description: 'Create a cluster' },
  { name: 'ecs:DescribeClusters', description: 'Read clusters' },
  { name: 'ecs:ListClusters', description: 'List clusters' },
  { name: 'ecs:RegisterTaskDefinition', description: 'Register a task definition revision' },
  { name: 'ecs:DescribeTaskDefinition', description: 'Read a task definition revision' },
  { name: 'ecs:ListTaskDefinitions', description: 'List task definition revisions' },
  { name: 'ecs:ListTaskDefinitionFamilies', description: 'List task definition families' },
  { name: 'ecs:DeregisterTaskDefinition', description: 'Deregister a task definition revision' },
  { name: 'ecs:RunTask', description: 'Start tasks from a task definition, placed by the scheduler' },
  { name: 'ecs:StartTask', description: 'Start tasks from a task definition on a chosen node' },
  { name: 'ecs:StopTask', description: 'Stop a running task' },
  { name: 'ecs:DescribeTasks', description: 'Read tasks' },
  { name: 'ecs:ListTasks', description: 'List tasks' },
  { name: 'ecs:CreateService', description: 'Create a long-running service' },
  { name: 'ecs:UpdateService', description: 'Change a service (task definition, desired count)' },
  { name: 'ecs:DescribeServices', description: 'Read services' },
  { name: 'ecs:ListServices', description: 'List services' },
  { name: 'ecs:DeleteService', description: 'Delete a service' },
  { name: 'ecs:ReadLogs', description: 'Read and follow the logs of tasks' },
  { name: 'ecs:ReadDeployments', description: "Read a service's deployment history" },
  { name: 'ecs:ReadHooks', description: 'List push hook rules, their runs and webhook deliveries' },
  { name: 'ecs:ManageHooks', description: 'Create, change or delete push hook rules and webhooks' },
  { name: 'ecs:ListSecrets', description: 'List task secrets (names and metadata, never values)' },
  { name: 'ecs:ManageSecrets', description: 'Create, change or delete task secrets' },
] as const satisfies readonly ActionInfo[];

export type ActionName = (typeof actions)[number]['name'];

// IAM compares action names case-insensitively; keying by lower case gives that and the canonical
// spelling back in one lookup.
const byLowerName: ReadonlyMap<string, ActionName> = new Map(
  actions.map((a) => [a.name.toLowerCase(), a.name]),
);

export function isKnownAction(name: string): boolean {
  return byLowerName.has(name.toLowerCase());
}

/** The catalog spelling of an action name given in any case, or undefined if there is no such action. */
export function canonicalAction(name: string): ActionName | undefined {
  return byLowerName.get(name.toLowerCase());
}
