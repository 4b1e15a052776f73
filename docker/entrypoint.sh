#!/bin/sh
# Entrypoint of the radnode images (docker/Dockerfile, docker/Dockerfile.gpu).
#
# 1. Secrets: radnode reads its settings from RADNODE_* environment variables
#    only. Where a secret file exists (Docker/Swarm secrets live in
#    /run/secrets; RADNODE_SECRETS_DIR overrides that, e.g. for tests), its
#    content is exported as the matching variable, and wins over a value set
#    in the environment:
#        radnode_database_url -> RADNODE_DATABASE__URL
#        radnode_broker_url   -> RADNODE_QUEUE__BROKER_URL
#    Trailing newlines are stripped; an empty file is ignored. Values are
#    never printed.
# 2. Command: arguments are a radnode subcommand ("listen", "worker --apps
#    glioma", "web", "serve", ...) and run as `radnode ARGS`. A first argument
#    of radnode, python, python3, sh, bash or an absolute path runs as is, with
#    the secrets exported, which the health checks use
#    (`radnode-entrypoint python -c ...`) and which helps debugging
#    (`docker run --rm -it IMAGE bash`).
set -eu

secrets_dir="${RADNODE_SECRETS_DIR:-/run/secrets}"

load_secret() {
    # load_secret FILE VARIABLE
    _file="$secrets_dir/$1"
    if [ -f "$_file" ] && [ -r "$_file" ]; then
        _value=$(cat "$_file")
        if [ -n "$_value" ]; then
            export "$2=$_value"
        else
            echo "radnode-entrypoint: secret $1 is empty, ignored" >&2
        fi
    fi
    unset _file _value
}

load_secret radnode_database_url RADNODE_DATABASE__URL
load_secret radnode_broker_url RADNODE_QUEUE__BROKER_URL

case "${1:-}" in
    radnode | python | python3 | sh | bash | /*)
        exec "$@"
        ;;
esac
exec radnode "$@"
