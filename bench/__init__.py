"""`make bench`: the backup CLI against the SDK's own list_entities(), as whole processes on Azurite."""
