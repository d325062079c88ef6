// One role assignment on a storage account, deployed to the account's own resource group: the
// data account may be an existing one outside the app's resource group.

@description('Name of the storage account (in the resource group this module is deployed to).')
param storageAccountName string

@description('Object id of the principal (the app\'s user-assigned identity).')
param principalId string

@description('GUID of the built-in role definition.')
param roleDefinitionId string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: account
  name: guid(account.id, principalId, roleDefinitionId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
