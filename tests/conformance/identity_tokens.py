"""Get tokens from the fake Entra ID with azure-identity's credentials.

The environment points the credentials at the fakes: AZURE_AUTHORITY_HOST,
REQUESTS_CA_BUNDLE, AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE for
the workload identity, and XTENANT_OPERATOR_TENANT_ID, XTENANT_OPERATOR_CLIENT_ID,
XTENANT_OPERATOR_SECRET for the operator's client secret. Prints one JSON object with
the access tokens, which the Rust test verifies against the tenants' JWKS.
"""

import json
import os

from azure.identity import ClientSecretCredential, WorkloadIdentityCredential

# azure-servicebus requests this scope, with the double slash.
SERVICEBUS_SCOPE = "https://servicebus.azure.net//.default"
ARM_SCOPE = "https://management.azure.com/.default"


def main():
    workload = WorkloadIdentityCredential()
    workload_token = workload.get_token(SERVICEBUS_SCOPE)

    # ClientSecretCredential goes through MSAL, which calls login.microsoftonline.com to
    # validate any authority it does not know unless instance discovery is off.
    operator = ClientSecretCredential(
        os.environ["XTENANT_OPERATOR_TENANT_ID"],
        os.environ["XTENANT_OPERATOR_CLIENT_ID"],
        os.environ["XTENANT_OPERATOR_SECRET"],
        authority=os.environ["AZURE_AUTHORITY_HOST"],
        disable_instance_discovery=True,
    )
    operator_token = operator.get_token(ARM_SCOPE)

    print(
        json.dumps(
            {
                "workload": workload_token.token,
                "workload_expires_on": workload_token.expires_on,
                "operator": operator_token.token,
                "operator_expires_on": operator_token.expires_on,
            }
        )
    )


if __name__ == "__main__":
    main()
