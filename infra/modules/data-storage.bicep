// The data account: the storage account whose tables are backed up. Only deployed when main.bicep
// is not given an existing account; the app reaches its tables with its identity only.

@description('Storage account name: 3-24 lowercase letters and digits.')
@minLength(3)
@maxLength(24)
param name string

param location string
param tags object = {}

@description('LRS for dev; RA-GZRS for prod, so the tables survive a zone and a region loss and stay readable from the secondary.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param skuName string

@description('Tables to create empty, so that a fresh environment has something to back up.')
param tableNames array = []

resource dataStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // #checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches storage over public endpoints; access is Entra ID only (shared keys disabled). Add VNet integration and private endpoints to deny public network access.
  // #checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: the app has no VNet, so the public endpoint stays on; shared-key and anonymous access are off.
  // #checkov:skip=CKV_AZURE_206:The SKU is a parameter: RA-GZRS in prod (main.prod.bicepparam), LRS only in dev by design.
  // #checkov:skip=CKV_AZURE_43:The name is a parameter (main.bicep passes 'stdata' + uniqueString(), 19 lowercase alphanumerics, and @minLength/@maxLength bound it); checkov cannot evaluate it.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
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

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: dataStorage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for t in tableNames: {
  parent: tableService
  name: t
}]

output id string = dataStorage.id
output tableEndpoint string = dataStorage.properties.primaryEndpoints.table
