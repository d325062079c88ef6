// Dev: cheapest redundancy, short retention, no WORM and no delete lock so that the
// environment can be torn down. Deploy: az deployment group create -g <rg> -f main.bicep -p main.dev.bicepparam
using './main.bicep'

param environmentName = 'tblbackup-dev'
param environmentType = 'dev'

// A new data account; to back up an existing one instead, name it (and its resource group).
param existingDataStorageAccountName = readEnvironmentVariable('EXISTING_DATA_STORAGE_ACCOUNT_NAME', '')
param existingDataStorageAccountResourceGroup = readEnvironmentVariable('EXISTING_DATA_STORAGE_RESOURCE_GROUP', '')
param dataStorageSku = 'Standard_LRS'
param backupStorageSku = 'Standard_LRS'
param hostStorageSku = 'Standard_LRS'

param backupTables = [
  'candidates'
]
param tableName = 'candidates'
param backupSchedule = '0 0 2 * * *'

// 7 daily, 4 weekly, no monthly: the lifecycle deletes backups after max(7, 4*7, 0) + 7 = 35 days.
param retentionDaily = 7
param retentionWeekly = 4
param retentionMonthly = 0
param retentionMarginDays = 7
param coolAfterDays = 7
param softDeleteRetentionDays = 7

param enableImmutability = false
param immutabilityDays = 7
param lockBackupAccount = false

param logRetentionDays = 30
param actionGroupId = readEnvironmentVariable('ACTION_GROUP_ID', '')
param alertEmail = readEnvironmentVariable('ALERT_EMAIL', '')
