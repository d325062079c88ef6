"""The Azure Functions app: creates the FunctionApp and registers each capability's blueprint.

The blueprint modules (*/functions.py) must not use `from __future__ import annotations`, and
declare list outputs as typing.List: the Python worker checks binding parameters' annotations as
real types and refuses strings and builtin generics such as list[str]."""

import azure.functions as func

from audit.functions import bp as audit_blueprint
from backup.functions import bp as backup_blueprint
from restore.functions import bp as restore_blueprint
from status.functions import bp as status_blueprint
from tablebackup.core import telemetry
from transfer.functions import bp as transfer_blueprint
from verify.functions import bp as verify_blueprint

telemetry.configure()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(backup_blueprint)
app.register_functions(restore_blueprint)
app.register_functions(verify_blueprint)
app.register_functions(audit_blueprint)
app.register_functions(transfer_blueprint)
app.register_functions(status_blueprint)
