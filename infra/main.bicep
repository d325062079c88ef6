// Azure Table Storage backup: a Python 3.11 Function App on Flex Consumption that streams the
// tables of a data account into a separate, write-protected backup account every night.
//
// Deploy with `azd up` (see ../azure.yaml and main.parameters.json) or
// `az deployment group create -g <rg> -f main.bicep -p main.<env>.bicepparam` (see README.md).
// Every connection is identity-based: no connection strings, no account keys.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd env name); seeds the unique resource names and the azd-env-name tag.')
param environmentName string

@description('dev or prod: picks the defaults of the SKU, retention and protection parameters below.')
@allowed([
  'dev'
  'prod'
])
param environmentType string = 'dev'

@description('Region of every resource. It must be a region that offers Flex Consumption.')
param location string = resourceGroup().location

@description('Function app name; empty for a generated unique name.')
param functionAppName string = ''

// --- The data account (the tables to back up) ---

@description('Name of an existing storage account whose tables are backed up; empty to create a new data account.')
param existingDataStorageAccountName string = ''

@description('Resource group of the existing data account; empty for this resource group.')
param existingDataStorageAccountResourceGroup string = ''

@description('SKU of a new data account: LRS is enough for dev; prod wants zone and geo redundancy with a readable secondary (RA-GZRS), which the runbook reads during a regional outage (READ_FROM_SECONDARY).')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param dataStorageSku string = environmentType == 'prod' ? 'Standard_RAGZRS' : 'Standard_LRS'

@description('Give the app write access to the tables (Storage Table Data Contributor) so it can restore; false grants Storage Table Data Reader (backup only).')
param allowRestoreToDataAccount bool = true

// --- The backup account ---

@description('SKU of the backup account. RA-GZRS in prod: backups survive a zone and a region loss, and stay readable from the secondary region.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param backupStorageSku string = environmentType == 'prod' ? 'Standard_RAGZRS' : 'Standard_LRS'

@description('Tables the daily run backs up (BACKUP_TABLES); one lifecycle rule per table. [\'*\'] backs up every table.')
param backupTables array = [
  'candidates'
]

@description('Default table of the CLI and HTTP API (TABLE_NAME).')
param tableName string = 'candidates'

@description('NCRONTAB schedule of the daily backup (BACKUP_SCHEDULE), in UTC.')
param backupSchedule string = '0 0 2 * * *'

@description('Daily backups kept (days).')
@minValue(1)
param retentionDaily int = environmentType == 'prod' ? 30 : 7

@description('Weekly backups kept (weeks).')
@minValue(0)
param retentionWeekly int = environmentType == 'prod' ? 12 : 4

@description('Monthly backups kept (months).')
@minValue(0)
param retentionMonthly int = environmentType == 'prod' ? 12 : 0

@description('Days added to the longest retention before the lifecycle policy deletes a backup.')
@minValue(0)
param retentionMarginDays int = 7

@description('Days after which backups move to the Cool tier.')
@minValue(0)
param coolAfterDays int = 7

@description('Soft-delete retention (days) of deleted blobs, overwritten versions and deleted containers in the backup account.')
@minValue(1)
@maxValue(365)
param softDeleteRetentionDays int = environmentType == 'prod' ? 30 : 7

@description('Add a time-based (WORM) immutability policy to the backup container: nobody, the app included, can delete or overwrite a backup younger than immutabilityDays. For the security-incident scenario.')
param enableImmutability bool = environmentType == 'prod'

@description('Days the audit trail is kept (7 years): the immutability period of the audit-payloads container.')
param auditRetentionDays int = 2557

@description('Days a backup stays immutable. Keep it at most the lifecycle delete age, or deletion waits for it.')
@minValue(1)
@maxValue(146000)
param immutabilityDays int = environmentType == 'prod' ? 30 : 7

@description('Put a CanNotDelete lock on the backup account: deleting the account would delete every backup, soft delete or not.')
param lockBackupAccount bool = environmentType == 'prod'

// --- Functions host ---

@description('SKU of the small account for the Functions host (AzureWebJobsStorage) and the deployment package.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
])
param hostStorageSku string = environmentType == 'prod' ? 'Standard_ZRS' : 'Standard_LRS'

@description('Flex Consumption: spread instances across availability zones (only in regions that support it).')
param zoneRedundant bool = false

@description('Flex Consumption: most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption: memory of each instance (MB).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Storage request retries (STORAGE_RETRIES).')
param storageRetries string = '5'

@description('First retry backoff in seconds (STORAGE_RETRY_BACKOFF_SECONDS).')
param storageRetryBackoffSeconds string = '0.8'

@description('Connect and read timeout in seconds (STORAGE_TIMEOUT_SECONDS).')
param storageTimeoutSeconds string = '60'

@description('Schedule of the retention run (PRUNE_SCHEDULE), after the verification.')
param pruneSchedule string = '0 0 3 * * *'

@description('Schedule of the daily verification (VERIFY_SCHEDULE), after the backup.')
param verifySchedule string = '0 30 2 * * *'

@description('Schedule of the DR drill (DRILL_SCHEDULE): monthly; full-table drills in the first month of each quarter.')
param drillSchedule string = '0 0 4 1 * *'

@description('Properties that must be present and non-empty per table (REQUIRED_FIELDS), e.g. candidates:email,name.')
param requiredFields string = ''

@description('RTO in minutes that drills check the restore time against (RTO_MINUTES).')
param rtoMinutes string = '60'

@description('Webhook (Teams/Slack) that failed verifications and drills POST to (NOTIFY_WEBHOOK_URL); empty for none.')
@secure()
param notifyWebhookUrl string = ''

@description('Daily run: full, or incremental with a weekly full on fullBackupDay (BACKUP_MODE).')
@allowed([
  'full'
  'incremental'
])
param backupMode string = 'full'

@description('Weekday of the weekly full backup in incremental mode (FULL_BACKUP_DAY).')
param fullBackupDay string = 'sunday'

@description('Restores over HTTP with more entities than this are queued (RESTORE_HTTP_MAX_ENTITIES).')
param restoreHttpMaxEntities string = '50000'

@description('Batches written in parallel while restoring (RESTORE_WORKERS).')
param restoreWorkers string = '4'

@description('A queued restore is cut into PartitionKey ranges of about this many entities, one queue message each (RESTORE_PART_ENTITIES).')
param restorePartEntities string = '1000000'

// --- Monitoring and alerts ---

@description('Log Analytics retention (days).')
@minValue(30)
@maxValue(730)
param logRetentionDays int = environmentType == 'prod' ? 90 : 30

@description('Resource id of an existing action group for the alerts. Empty: one is created from alertEmail, or the alerts notify nobody (they still show in the portal).')
param actionGroupId string = ''

@description('E-mail address of the action group created when actionGroupId is empty; empty for none.')
param alertEmail string = ''

@description('Hours without a "backup complete" log line (per table) before the missing-backup alert fires.')
@minValue(1)
@maxValue(47)
param backupFreshnessHours int = 26

@description('Average table end-to-end latency (ms, over 5 minutes) above which the latency alert fires.')
param latencyThresholdMs int = 1000

// ---------------------------------------------------------------------------------------------
// Names and derived values
// ---------------------------------------------------------------------------------------------

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = {
  'azd-env-name': environmentName
  workload: 'table-backup'
}

var appName = empty(functionAppName) ? 'func-tblbackup-${token}' : functionAppName
var useExistingData = !empty(existingDataStorageAccountName)
var dataAccountName = useExistingData ? existingDataStorageAccountName : 'stdata${token}'
var dataResourceGroup = useExistingData && !empty(existingDataStorageAccountResourceGroup) ? existingDataStorageAccountResourceGroup : resourceGroup().name
var dataAccountId = resourceId(dataResourceGroup, 'Microsoft.Storage/storageAccounts', dataAccountName)
// Built from the name so that it works for a new and an existing account alike.
var dataTableEndpoint = 'https://${dataAccountName}.table.${environment().suffixes.storage}/'

var backupAccountName = 'stbak${token}'
var hostAccountName = 'stfunc${token}'
var backupContainerName = 'table-backups'
// The Flex Consumption deployment package lives in the host account, not with the backups.
var deploymentContainerName = 'app-package'

// Lifecycle: a backup is deleted once no retention class (daily, weekly, monthly) can still need it.
var deleteAfterDays = max(retentionDaily, retentionWeekly * 7, retentionMonthly * 31) + retentionMarginDays
// Backup blob names start with '<table>-' (see tablebackup/repository/backupformat.py); '*' backs up
// every table. Never the whole container: the erasure register (`_erasures/`) must outlive every
// backup, so with '*' the rules match the names a table can start with (a letter, in either case),
// at most 10 prefixes to a rule.
var backupEveryTable = contains(backupTables, '*')
var everyTablePrefixes = [
  ['${backupContainerName}/a', '${backupContainerName}/b', '${backupContainerName}/c', '${backupContainerName}/d', '${backupContainerName}/e', '${backupContainerName}/f', '${backupContainerName}/g', '${backupContainerName}/h', '${backupContainerName}/i', '${backupContainerName}/j']
  ['${backupContainerName}/k', '${backupContainerName}/l', '${backupContainerName}/m', '${backupContainerName}/n', '${backupContainerName}/o', '${backupContainerName}/p', '${backupContainerName}/q', '${backupContainerName}/r', '${backupContainerName}/s', '${backupContainerName}/t']
  ['${backupContainerName}/u', '${backupContainerName}/v', '${backupContainerName}/w', '${backupContainerName}/x', '${backupContainerName}/y', '${backupContainerName}/z', '${backupContainerName}/A', '${backupContainerName}/B', '${backupContainerName}/C', '${backupContainerName}/D']
  ['${backupContainerName}/E', '${backupContainerName}/F', '${backupContainerName}/G', '${backupContainerName}/H', '${backupContainerName}/I', '${backupContainerName}/J', '${backupContainerName}/K', '${backupContainerName}/L', '${backupContainerName}/M', '${backupContainerName}/N']
  ['${backupContainerName}/O', '${backupContainerName}/P', '${backupContainerName}/Q', '${backupContainerName}/R', '${backupContainerName}/S', '${backupContainerName}/T', '${backupContainerName}/U', '${backupContainerName}/V', '${backupContainerName}/W', '${backupContainerName}/X']
  ['${backupContainerName}/Y', '${backupContainerName}/Z']
]
var tablePrefixes = [for t in backupTables: ['${backupContainerName}/${t}-']]
var lifecyclePrefixes = backupEveryTable ? everyTablePrefixes : tablePrefixes

// Built-in role definitions (ids are the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageTableDataReader: '76199698-9eea-4c19-bc75-cec21354c6b6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// ---------------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------------

// One user-assigned identity for the app: created before the app, so its roles are in place
// when the host first starts, and it survives re-creating the app.
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${appName}'
  location: location
  tags: tags
}

// ---------------------------------------------------------------------------------------------
// Data account (the tables); skipped when an existing account is given
// ---------------------------------------------------------------------------------------------

module dataStorage 'modules/data-storage.bicep' = if (!useExistingData) {
  name: 'data-storage-${token}'
  params: {
    name: dataAccountName
    location: location
    tags: tags
    skuName: dataStorageSku
    // A new account gets the backed-up tables, empty; '*' names no table.
    tableNames: backupEveryTable ? [] : backupTables
  }
}

// ---------------------------------------------------------------------------------------------
// Backup account: separate from the data account, so a leaked data-account credential cannot
// touch the backups; versioning, soft delete and optional WORM protect them from the app itself.
// ---------------------------------------------------------------------------------------------

resource backupStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // #checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches storage over public endpoints; access is Entra ID only (shared keys disabled). Add VNet integration and private endpoints to deny public network access.
  // #checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: the app has no VNet, so the public endpoint stays on; shared-key and anonymous access are off.
  // #checkov:skip=CKV_AZURE_206:The SKU is a parameter: RA-GZRS in prod (main.prod.bicepparam), LRS only in dev by design.
  // #checkov:skip=CKV_AZURE_43:The name is 'stbak' + uniqueString() (18 lowercase alphanumerics); checkov cannot evaluate Bicep interpolation.
  name: backupAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: backupStorageSku
  }
  properties: {
    // Entra ID only, TLS 1.2, HTTPS, no anonymous access.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    accessTier: 'Hot'
  }
}

resource backupBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: backupStorage
  name: 'default'
  properties: {
    // An overwritten or deleted backup stays recoverable as a previous version.
    isVersioningEnabled: true
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteRetentionDays
      // Soft-deleted blobs and versions can't be purged early, not even by the app's identity.
      allowPermanentDelete: false
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteRetentionDays
    }
  }
}

resource backupContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: backupBlobService
  name: backupContainerName
  properties: {
    publicAccess: 'None'
    // Version-level WORM support is fixed when the container is created, so it is always on;
    // it has no effect until the policy below exists. Turning the policy on later is then a redeploy.
    immutableStorageWithVersioning: {
      enabled: true
    }
  }
}

// Time-based retention: a backup can't be deleted or overwritten for immutabilityDays. Left
// unlocked so that it can be changed; lock it by hand for compliance (infra/README.md, "Immutability").
resource backupImmutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (enableImmutability) {
  parent: backupContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: immutabilityDays
    allowProtectedAppendWrites: false
  }
}

// The audit trail's large before/after images: kept 7 years, immutable when enabled. (The entries
// themselves are table rows in the data account, which the app only ever inserts.)
resource auditPayloadContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: backupBlobService
  name: 'audit-payloads'
  properties: {
    publicAccess: 'None'
    immutableStorageWithVersioning: {
      enabled: true
    }
  }
}

resource auditPayloadImmutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (enableImmutability) {
  parent: auditPayloadContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: auditRetentionDays
    allowProtectedAppendWrites: false
  }
}

// Lifecycle: Cool after coolAfterDays, deleted after the longest retention plus a margin; one
// rule per backed-up table (prefix 'table-backups/<table>-'), block blobs only.
resource backupLifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: backupStorage
  name: 'default'
  properties: {
    policy: {
      rules: [for (prefix, i) in lifecyclePrefixes: {
        enabled: true
        // Rule names are alphanumeric, like table names.
        name: backupEveryTable ? 'retainAllTables${i}' : 'retain${backupTables[i]}'
        type: 'Lifecycle'
        definition: {
          filters: {
            blobTypes: [
              'blockBlob'
            ]
            prefixMatch: prefix
          }
          actions: {
            baseBlob: {
              tierToCool: {
                daysAfterModificationGreaterThan: coolAfterDays
              }
              delete: {
                daysAfterModificationGreaterThan: deleteAfterDays
              }
            }
            // With versioning on, deleting a backup leaves a previous version; purge it too.
            version: {
              delete: {
                daysAfterCreationGreaterThan: softDeleteRetentionDays
              }
            }
          }
        }
      }]
    }
  }
  dependsOn: [
    backupContainer
  ]
}

// Deleting the account would take every backup with it: soft delete does not cover that.
resource backupLock 'Microsoft.Authorization/locks@2020-05-01' = if (lockBackupAccount) {
  scope: backupStorage
  name: 'protect-table-backups'
  properties: {
    level: 'CanNotDelete'
    notes: 'Holds the table backups; deleting the account deletes every backup.'
  }
}

// Who read, wrote or deleted which backup: the audit trail for a security incident.
resource backupBlobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: backupBlobService
  name: 'backup-blob-audit'
  properties: {
    workspaceId: workspace.id
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

// ---------------------------------------------------------------------------------------------
// Host account: AzureWebJobsStorage (timer schedule monitor, host keys, diagnostic events, the
// app's queues) and the Flex deployment package. Kept apart from the backup account so that the
// broad Blob Data Owner role the host needs never applies to backups, and host churn never
// mixes with the backup container's lifecycle and WORM rules.
// ---------------------------------------------------------------------------------------------

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // #checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches storage over public endpoints; access is Entra ID only (shared keys disabled). Add VNet integration and private endpoints to deny public network access.
  // #checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: the app has no VNet, so the public endpoint stays on; shared-key and anonymous access are off.
  // #checkov:skip=CKV_AZURE_206:Host state (timer schedule, keys, deployment package) is recreated by a redeploy; ZRS in prod is enough, geo-replication would add cost and nothing recoverable.
  // #checkov:skip=CKV_AZURE_43:The name is 'stfunc' + uniqueString() (19 lowercase alphanumerics); checkov cannot evaluate Bicep interpolation.
  name: hostAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: hostStorageSku
  }
  properties: {
    // Entra ID only, TLS 1.2, HTTPS, no anonymous access.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    accessTier: 'Hot'
  }
}

resource hostBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// ---------------------------------------------------------------------------------------------
// Role assignments: least privilege for the app's identity
// ---------------------------------------------------------------------------------------------

// Tables: read to back up, write to restore. In a module because an existing data account may
// live in another resource group.
module dataTableRole 'modules/storage-role.bicep' = {
  name: 'table-role-${token}'
  scope: resourceGroup(dataResourceGroup)
  params: {
    storageAccountName: dataAccountName
    principalId: identity.properties.principalId
    roleDefinitionId: allowRestoreToDataAccount ? roles.storageTableDataContributor : roles.storageTableDataReader
  }
  dependsOn: [
    dataStorage
  ]
}

// Backups: write and read blobs in the backup account. Contributor, not Owner: the app can't
// change ACLs or immutability, and WORM plus soft delete survive a compromised app.
resource backupBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: backupStorage
  name: guid(backupStorage.id, identity.id, roles.storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Host: Blob Data Owner is what identity-based AzureWebJobsStorage requires (host keys, timer
// schedule monitor, blob leases); it also lets Flex read the deployment package.
resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: hostStorage
  name: guid(hostStorage.id, identity.id, roles.storageBlobDataOwner)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Host: the app's audit queue and the host's own queues live in the host account.
resource hostQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: hostStorage
  name: guid(hostStorage.id, identity.id, roles.storageQueueDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Host: the Functions host writes its diagnostic events to a table in AzureWebJobsStorage.
resource hostTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: hostStorage
  name: guid(hostStorage.id, identity.id, roles.storageTableDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Telemetry: Application Insights has local (key) auth off, so ingestion needs this role.
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: appInsights
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------------------------------------
// Monitoring
// ---------------------------------------------------------------------------------------------

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${appName}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${appName}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    // Entra ID only: the app authenticates with its identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).
    DisableLocalAuth: true
  }
}

// ---------------------------------------------------------------------------------------------
// Function App on Flex Consumption
// ---------------------------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // #checkov:skip=CKV_AZURE_225:Zone redundancy is the zoneRedundant parameter (off by default: not every Flex Consumption region offers it); a nightly job missed in a zone outage is caught by the missing-backup alert and rerun with POST /api/backups.
  name: 'plan-${appName}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
    zoneRedundant: zoneRedundant
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // #checkov:skip=CKV_AZURE_222:The ops HTTP API (POST/GET /api/backups) is called from operators' machines and scripts with function keys; there is no VNet or private endpoint to reach it otherwise.
  // #checkov:skip=CKV_AZURE_212:numberOfWorkers does not apply to Flex Consumption, which scales per function from zero; a nightly timer needs no standby instance.
  // #checkov:skip=CKV_AZURE_213:A scale-to-zero app running a nightly timer has no instance pool for a health check to prune; backup health is watched by the BackupFailed and missing-backup alerts.
  // #checkov:skip=CKV_AZURE_17:Client certificates would break calls authenticated by function keys; TLS 1.2 and HTTPS-only are enforced.
  name: appName
  location: location
  // azd finds the app to deploy by this tag (service 'api' in azure.yaml).
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // Flex Consumption sets FUNCTIONS_WORKER_RUNTIME and the runtime version itself: don't add them.
      appSettings: [
        // Host storage, identity-based.
        {
          name: 'AzureWebJobsStorage__accountName'
          value: hostStorage.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identity.properties.clientId
        }
        // The tables to back up.
        {
          name: 'TABLES__tableServiceUri'
          value: dataTableEndpoint
        }
        {
          name: 'TABLES__clientId'
          value: identity.properties.clientId
        }
        // Where backups go.
        {
          name: 'BACKUPS__blobServiceUri'
          value: backupStorage.properties.primaryEndpoints.blob
        }
        {
          name: 'BACKUPS__clientId'
          value: identity.properties.clientId
        }
        {
          name: 'BACKUP_CONTAINER'
          value: backupContainerName
        }
        {
          name: 'TABLE_NAME'
          value: tableName
        }
        {
          name: 'BACKUP_TABLES'
          value: join(backupTables, ',')
        }
        {
          name: 'BACKUP_SCHEDULE'
          value: backupSchedule
        }
        {
          name: 'BACKUP_MODE'
          value: backupMode
        }
        {
          name: 'FULL_BACKUP_DAY'
          value: fullBackupDay
        }
        {
          name: 'INCREMENTAL_OVERLAP_MINUTES'
          value: '15'
        }
        // Fan-out of large tables across instances (see docs/scaling.md).
        {
          name: 'FANOUT_THRESHOLD_ENTITIES'
          value: '2000000'
        }
        {
          name: 'PART_TARGET_ENTITIES'
          value: '1000000'
        }
        {
          name: 'MAX_PARTS'
          value: '64'
        }
        {
          name: 'READ_STREAMS'
          value: '2'
        }
        {
          name: 'BACKUP_RUNS_TABLE'
          value: 'backupruns'
        }
        {
          name: 'PRUNE_SCHEDULE'
          value: pruneSchedule
        }
        {
          name: 'RETENTION_DAILY'
          value: string(retentionDaily)
        }
        {
          name: 'RETENTION_WEEKLY'
          value: string(retentionWeekly)
        }
        {
          name: 'RETENTION_MONTHLY'
          value: string(retentionMonthly)
        }
        // Safety backups (taken before a restore writes into a table) are kept by days, in no slot.
        {
          name: 'SAFETY_BACKUP_KEEP_DAYS'
          value: '30'
        }
        {
          name: 'VERIFY_SCHEDULE'
          value: verifySchedule
        }
        {
          name: 'DRILL_SCHEDULE'
          value: drillSchedule
        }
        {
          name: 'REQUIRED_FIELDS'
          value: requiredFields
        }
        {
          name: 'BACKUP_MAX_AGE_HOURS'
          value: string(backupFreshnessHours)
        }
        {
          name: 'RTO_MINUTES'
          value: rtoMinutes
        }
        {
          name: 'NOTIFY_WEBHOOK_URL'
          value: notifyWebhookUrl
        }
        {
          name: 'VERIFICATIONS_TABLE'
          value: 'backupverifications'
        }
        {
          name: 'DRILLS_TABLE'
          value: 'drillreports'
        }
        {
          name: 'RESTORE_HTTP_MAX_ENTITIES'
          value: restoreHttpMaxEntities
        }
        {
          name: 'RESTORE_OPERATIONS_TABLE'
          value: 'restoreoperations'
        }
        {
          name: 'RESTORE_WORKERS'
          value: restoreWorkers
        }
        {
          name: 'RESTORE_PART_ENTITIES'
          value: restorePartEntities
        }
        // The audit trail: messages on the host account's queue, entries in the data account.
        {
          name: 'AUDIT_QUEUE'
          value: 'audit-events'
        }
        {
          name: 'AUDIT_TABLE'
          value: 'auditlogs'
        }
        {
          name: 'AUDIT_REJECTED_TABLE'
          value: 'auditrejected'
        }
        {
          name: 'AUDIT_PAYLOAD_CONTAINER'
          value: 'audit-payloads'
        }
        {
          name: 'AUDIT_QUERY_DAYS'
          value: '7'
        }
        {
          name: 'ERASURES_TABLE'
          value: 'erasures'
        }
        {
          name: 'EXPORT_CONTAINER'
          value: 'exports'
        }
        {
          name: 'EXPORT_INLINE_MAX_ENTITIES'
          value: '5000'
        }
        {
          name: 'IMPORT_MAX_BODY_BYTES'
          value: '10485760'
        }
        // Regional outage: set to true to read the tables from the secondary (see docs/runbook.md).
        {
          name: 'READ_FROM_SECONDARY'
          value: 'false'
        }
        // Regional outage of the backup account: set to true to read the backups from its secondary.
        {
          name: 'BACKUP_READ_FROM_SECONDARY'
          value: 'false'
        }
        {
          name: 'STORAGE_RETRIES'
          value: storageRetries
        }
        {
          name: 'STORAGE_RETRY_BACKOFF_SECONDS'
          value: storageRetryBackoffSeconds
        }
        {
          name: 'STORAGE_TIMEOUT_SECONDS'
          value: storageTimeoutSeconds
        }
        // Telemetry: the connection string only locates the resource; ingestion is authenticated
        // with the identity because local auth is disabled.
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'Authorization=AAD;ClientId=${identity.properties.clientId}'
        }
      ]
    }
  }
  // The host reads its storage and the package as soon as it starts: grant the roles first.
  dependsOn: [
    deploymentContainer
    hostBlobOwner
    hostQueueContributor
    hostTableContributor
    metricsPublisher
  ]
}

// No FTP or SCM basic-auth credentials: deploy with Entra ID (azd, func publish, az CLI).
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// ---------------------------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------------------------

var createActionGroup = empty(actionGroupId) && !empty(alertEmail)

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (createActionGroup) {
  name: 'ag-${appName}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'tblbackup'
    enabled: true
    emailReceivers: [
      {
        name: 'backup-operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var alertActionGroups = !empty(actionGroupId) ? [
  actionGroupId
] : createActionGroup ? [
  actionGroup.id
] : []

// The KQL below runs over the workspace, filtered to this app's Application Insights resource.
var appInsightsFilter = '| where _ResourceId =~ "${toLower(appInsights.id)}"'

// A failed invocation (the timer raises when any table failed) or a "backup failed" log line:
// the "BackupFailed" alert. 4xx answers to bad HTTP requests are the caller's, not failures.
var failureQuery = join([
  'union'
  '  (AppRequests ${appInsightsFilter}'
  '    | where Success == false and not(ResultCode startswith "4")'
  '    | project TimeGenerated, Function = OperationName, Detail = strcat("invocation failed: ", ResultCode)),'
  '  (AppTraces ${appInsightsFilter}'
  '    | where Message startswith "backup failed"'
  '    | project TimeGenerated, Function = OperationName, Detail = Message)'
], '\n')

// Tables without a "backup complete: table=<t> ..." line in the freshness window; one row each.
var expectedTables = [for t in backupTables: '"${toLower(t)}"']
var missingBackupPerTableQuery = join([
  'let expected = dynamic([${join(expectedTables, ', ')}]);'
  'let seen = toscalar(AppTraces ${appInsightsFilter}'
  '  | where TimeGenerated > ago(${backupFreshnessHours}h)'
  '  | where Message startswith "backup complete"'
  '  | extend TableName = tolower(extract(@"table=([^ ]+)", 1, Message))'
  '  | summarize make_set(TableName));'
  'print TableName = set_difference(expected, seen)'
  '| mv-expand TableName to typeof(string)'
  '| where isnotempty(TableName)'
], '\n')
// With BACKUP_TABLES=* the table list is unknown: alert when no table at all was backed up.
var missingBackupAnyQuery = join([
  'AppTraces ${appInsightsFilter}'
  '| where TimeGenerated > ago(${backupFreshnessHours}h)'
  '| where Message startswith "backup complete"'
  '| summarize backups = count()'
  '| where backups == 0'
], '\n')

var verificationQuery = join([
  'AppTraces ${appInsightsFilter}'
  '| where Message startswith "verification failed"'
  '| project TimeGenerated, Message'
], '\n')

resource backupFailedAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'BackupFailed-${appName}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'BackupFailed (${appName})'
    description: 'A function invocation failed or a table backup failed. The daily run fails when any table fails; see the log line for the table and error.'
    severity: 1
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: failureQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    // The App* tables may not exist yet in a new workspace; don't fail the deployment on it.
    skipQueryValidation: true
    autoMitigate: true
    actions: {
      actionGroups: alertActionGroups
    }
  }
}

resource missingBackupAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'BackupMissing-${appName}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'No successful backup in ${backupFreshnessHours} h (${appName})'
    description: 'A backed-up table has no "backup complete" log line in the last ${backupFreshnessHours} hours: the daily run did not run, or failed for that table.'
    severity: 1
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT1H'
    // The query filters on the freshness window itself; the rule's window (max 2 days) only has to cover it.
    windowSize: 'P2D'
    criteria: {
      allOf: [
        {
          query: backupEveryTable ? missingBackupAnyQuery : missingBackupPerTableQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    skipQueryValidation: true
    autoMitigate: true
    actions: {
      actionGroups: alertActionGroups
    }
  }
}

resource verificationFailedAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'VerificationFailed-${appName}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Backup verification failed (${appName})'
    description: 'A backup failed verification (checksum, entity count or readability): it may not restore.'
    severity: 1
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: verificationQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    skipQueryValidation: true
    autoMitigate: true
    actions: {
      actionGroups: alertActionGroups
    }
  }
}

// Slow table service: backups slow down and may run into the function timeout.
resource tableLatencyAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'HighTableLatency-${appName}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Average end-to-end latency of successful table requests on ${dataAccountName} is above ${latencyThresholdMs} ms over 5 minutes.'
    severity: 2
    enabled: true
    scopes: [
      '${dataAccountId}/tableServices/default'
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'SuccessE2ELatency'
          metricNamespace: 'Microsoft.Storage/storageAccounts/tableServices'
          metricName: 'SuccessE2ELatency'
          operator: 'GreaterThan'
          threshold: latencyThresholdMs
          timeAggregation: 'Average'
        }
      ]
    }
    autoMitigate: true
    actions: [for id in alertActionGroups: {
      actionGroupId: id
    }]
  }
  dependsOn: [
    dataStorage
  ]
}

// ---------------------------------------------------------------------------------------------
// Outputs (upper case: azd stores them in the environment as they are)
// ---------------------------------------------------------------------------------------------

output AZURE_FUNCTION_APP_NAME string = functionApp.name
output AZURE_FUNCTION_APP_HOSTNAME string = functionApp.properties.defaultHostName
output BACKUP_STORAGE_ACCOUNT_NAME string = backupStorage.name
output DATA_STORAGE_ACCOUNT_NAME string = dataAccountName
output HOST_STORAGE_ACCOUNT_NAME string = hostStorage.name
output AZURE_IDENTITY_CLIENT_ID string = identity.properties.clientId
output BACKUP_LIFECYCLE_DELETE_AFTER_DAYS int = deleteAfterDays
