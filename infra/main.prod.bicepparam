// Prod: zone- and geo-redundant storage, 30 daily / 12 weekly / 12 monthly backups, WORM on the
// backup container and a delete lock on the backup account.
// Deploy: az deployment group create -g <rg> -f main.bicep -p main.prod.bicepparam
using './main.bicep'

param environmentName = 'tblbackup-prod'
param environmentType = 'prod'

// In production the tables usually already exist: name the account (and its resource group).
// Left empty, a new RA-GZRS data account is created. An existing account needs RA-GRS or RA-GZRS
// for the runbook's regional-outage steps (READ_FROM_SECONDARY reads its secondary).
param existingDataStorageAccountName = readEnvironmentVariable('EXISTING_DATA_STORAGE_ACCOUNT_NAME', '')
param existingDataStorageAccountResourceGroup = readEnvironmentVariable('EXISTING_DATA_STORAGE_RESOURCE_GROUP', '')
// Read access to the secondary region: backups keep running from it during a regional outage.
param dataStorageSku = 'Standard_RAGZRS'
// Read access to the secondary region: backups can be listed, verified and restored during a regional
// outage (BACKUP_READ_FROM_SECONDARY).
param backupStorageSku = 'Standard_RAGZRS'
param hostStorageSku = 'Standard_ZRS'

param backupTables = [
  'candidates'
]
param tableName = 'candidates'
param backupSchedule = '0 0 2 * * *'

// 30 daily, 12 weekly, 12 monthly: the lifecycle deletes backups after max(30, 12*7, 12*31) + 7 = 379 days.
param retentionDaily = 30
param retentionWeekly = 12
param retentionMonthly = 12
param retentionMarginDays = 7
param coolAfterDays = 7
param softDeleteRetentionDays = 30

// Security incident: the newest 30 days of backups can't be deleted or overwritten by anyone.
param enableImmutability = true
param immutabilityDays = 30
param lockBackupAccount = true

param zoneRedundant = false
param logRetentionDays = 90
param actionGroupId = readEnvironmentVariable('ACTION_GROUP_ID', '')
param alertEmail = readEnvironmentVariable('ALERT_EMAIL', '')
