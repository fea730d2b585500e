"""`acr`: a command line for users of the registry, in the spirit of `az acr`.

It talks only HTTP, to the same APIs any client uses: the ARM-shaped management API (`/subscriptions/...`,
with an Entra token) for registries, webhooks, tokens and scope maps, and each registry's data plane
(`/oauth2/...`, `/acr/v1/...`, `/v2/`) for signing in and for repositories. It never reads Cosmos DB or
Storage; that is the operator tool's job (`python -m services.management`: bootstrapping, signing keys,
the local issuer).

    app.py                 the command tree          config.py / config_commands.py   settings
    registry_commands.py   create, list, show, ...   login_command.py + authfile.py   acr login
    repository_commands.py acr repository ...        webhook_commands.py              acr webhook ...
    token_commands.py      acr token, scope-map      arm.py / dataplane.py            the two APIs
    output.py              json, table, tsv, query   errors.py                        exit codes
"""
