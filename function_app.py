"""The entry point the Functions host loads: one DFApp with every capability's blueprint."""

import azure.durable_functions as df
import azure.functions as func

from functions.billing import billing_bp
from functions.documents import documents_bp
from functions.engagements import engagements_bp
from functions.ledger import imports_bp
from functions.ops import ops_bp
from functions.portal import portal_bp
from functions.quickbooks import quickbooks_bp
from functions.scim import scim_bp
from functions.webhooks import intake_bp
from shared import telemetry
from shared.config import get_settings

# Fail at start, naming the setting, rather than at the first request.
telemetry.configure(get_settings())

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(billing_bp)
app.register_functions(imports_bp)
app.register_functions(ops_bp)
app.register_functions(intake_bp)
app.register_functions(documents_bp)
app.register_functions(quickbooks_bp)
app.register_functions(engagements_bp)
app.register_functions(portal_bp)
app.register_functions(scim_bp)
