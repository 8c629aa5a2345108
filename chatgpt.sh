#!/usr/bin/env bash
# chatgpt.sh: run the Codex CLI through a private codex-shield proxy.
#
# Every session starts its own proxy on a free loopback port (PORT=0), passes the
# codex-shield provider to Codex as `-c` overrides (so the user's own config.toml and
# profiles still apply), sets the model to the proxy's FORCED_MODEL unless the user
# chose one, and then becomes Codex (exec): Codex owns the terminal and its signals as
# when run directly.  A watchdog stops the proxy once Codex has exited, however it
# ended.  Two sessions never share or kill each other's proxy.  All arguments go to
# Codex unchanged; the exit status is Codex's.  Works through symlinks, from any cwd.
#
#   ln -s /path/to/codex-shield/chatgpt.sh /usr/local/bin/chatgpt
#   chatgpt                      # interactive Codex
#   chatgpt exec "fix the tests" # any Codex arguments
#   chatgpt resume --last        # continue a session through the proxy (not `codex resume`)
set -euo pipefail

# --- settings (override from the environment) ---------------------------------
CLIENT_EXECUTABLE="${CLIENT_EXECUTABLE:-codex}"
CLIENT_CONFIG_DIR="${CLIENT_CONFIG_DIR:-${CODEX_HOME:-$HOME/.codex}}"
PROFILE_NAME="${CODEX_SHIELD_PROFILE:-codex-shield}"       # -> $CLIENT_CONFIG_DIR/$PROFILE_NAME.config.toml (for use by hand)
PROVIDER_ID="codex-shield"                                  # [model_providers.codex-shield] in config_template.toml
STARTUP_TIMEOUT_SECONDS="${CODEX_SHIELD_STARTUP_TIMEOUT:-20}"
PROXY_LOG="${CODEX_SHIELD_LOG:-}"                           # keep the proxy's log here (default: temporary)

me="chatgpt.sh"
die() { echo "$me: $*" >&2; exit 1; }

# --- where this script really lives (follows symlinks, any cwd) ---------------
script_dir() {
    local src="${BASH_SOURCE[0]}" dir
    while [ -L "$src" ]; do
        dir="$(cd -P "$(dirname "$src")" && pwd)"
        src="$(readlink "$src")"
        case "$src" in /*) ;; *) src="$dir/$src" ;; esac
    done
    cd -P "$(dirname "$src")" && pwd
}
DIR="$(script_dir)"

# --- the proxy binary: next to us, else the repo's release build, else build it
find_proxy() {
    local candidate
    for candidate in "$DIR/codex-shield" "$DIR/target/release/codex-shield"; do
        if [ -f "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"
            return
        fi
    done
    [ -f "$DIR/Cargo.toml" ] || die "no codex-shield binary next to $DIR/chatgpt.sh"
    command -v cargo >/dev/null 2>&1 || die "codex-shield is not built and cargo is missing (install Rust, or copy the static binary next to chatgpt.sh)"
    echo "$me: building codex-shield (cargo build --release), once..." >&2
    cargo build --release --manifest-path "$DIR/Cargo.toml" >&2 || die "cargo build --release failed"
    echo "$DIR/target/release/codex-shield"
}

# --- the port written into a new profile: PORT from the env, else .env, else 8888
configured_port() {
    local port="${PORT:-}"
    if [ -z "$port" ] && [ -f "$DIR/.env" ]; then
        port="$(sed -n 's/^[[:space:]]*\(export[[:space:]]\{1,\}\)\{0,1\}PORT[[:space:]]*=[[:space:]]*["'\'']\{0,1\}\([0-9]\{1,5\}\).*/\2/p' "$DIR/.env" | tail -n 1)"
    fi
    case "$port" in '' | 0 | *[!0-9]*) port=8888 ;; esac
    echo "$port"
}

# --- the client config for people who start Codex by hand ---------------------
# Written from config_template.toml on first run, marked with the template's hash and the
# hash of what was written; refreshed when the template changes, unless the user edited
# it (then said once, on stderr).  The wrapper itself does not read it: it passes the
# provider as -c overrides (provider_overrides), so any profile of the user's still applies.
MARK="# codex-shield-template:"
# the unmarked file older wrappers wrote (template a00eebf), port put back as placeholder
LEGACY_SHAS="6709c323512ab33d4a91bbf4df34eb7fc7041d7665fab6fa2886b29d4f603aa9"
sha() { if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d' ' -f1; else cksum | tr ' ' -; fi; }
render_profile() { # render_profile TEMPLATE_SHA: the file to write, on stdout
    local body
    body="$(sed "s/__CODEX_SHIELD_PORT__/$(configured_port)/g" "$DIR/config_template.toml")"
    printf '%s %s %s\n%s\n' "$MARK" "$1" "$(printf '%s\n' "$body" | sha)" "$body"
}
write_profile() { # write_profile PATH TEMPLATE_SHA VERB: atomically, then say so
    local tmp
    tmp="$(mktemp "$CLIENT_CONFIG_DIR/.$PROFILE_NAME.XXXXXX")"
    render_profile "$2" >"$tmp"
    chmod 644 "$tmp"
    if [ "$3" = wrote ]; then
        # ln fails if another session created the file first: no overwrite, no race
        ln "$tmp" "$1" 2>/dev/null && echo "$me: wrote $1 (for \`codex --profile $PROFILE_NAME\` by hand; chatgpt.sh itself needs no profile)" >&2
        rm -f "$tmp"
    else
        mv -f "$tmp" "$1" && echo "$me: updated $1 to the new config_template.toml (you had not edited it)" >&2
    fi
}
ensure_profile() {
    local profile="$CLIENT_CONFIG_DIR/$PROFILE_NAME.config.toml" template="$DIR/config_template.toml"
    local current first marked_template marked_body body_sha seen
    [ -f "$template" ] || die "missing $template (keep it next to chatgpt.sh)"
    current="$(sha <"$template")"
    mkdir -p "$CLIENT_CONFIG_DIR"
    if [ ! -e "$profile" ]; then
        write_profile "$profile" "$current" wrote
        return
    fi
    first="$(head -n 1 "$profile")"
    case "$first" in
        "$MARK "*)
            read -r marked_template marked_body <<<"${first#"$MARK "}"
            [ "$marked_template" = "$current" ] && return
            body_sha="$(tail -n +2 "$profile" | sha)"
            if [ "$body_sha" = "$marked_body" ]; then
                write_profile "$profile" "$current" updated
                return
            fi
            ;;
        *)
            body_sha="$(sed 's|^\(base_url = "http://127.0.0.1:\)[0-9]*/v1"|\1__CODEX_SHIELD_PORT__/v1"|' "$profile" | sha)"
            case " $LEGACY_SHAS " in *" $body_sha "*)
                write_profile "$profile" "$current" updated
                return
                ;;
            esac
            ;;
    esac
    # edited by the user and the template changed since: say it once per template version
    seen="$CLIENT_CONFIG_DIR/.$PROFILE_NAME.seen-template"
    [ "$(cat "$seen" 2>/dev/null)" = "$current" ] && return
    echo "$me: note: $profile was edited, so it was not updated to the new config_template.toml ($template); compare them by hand (said once)" >&2
    printf '%s\n' "$current" >"$seen"
}

# --- the provider as -c overrides (the block of config_template.toml) ----------
# Passed on every run instead of --profile, so the user's own config.toml, a top-level
# `profile = ...`, `--profile NAME` / `-p NAME` and legacy [profiles.*] tables all keep
# working; Codex ranks -c overrides above every profile.
provider_overrides() { # provider_overrides PORT
    local key value
    echo "model_provider=\"$PROVIDER_ID\""
    while IFS= read -r line; do
        key="${line%%=*}" value="${line#*=}"
        key="${key//[[:space:]]/}" value="${value#"${value%%[![:space:]]*}"}"
        case "$key" in
            base_url) value="\"http://127.0.0.1:$1/v1\"" ;;
            '' | \#* | \[*) continue ;;
        esac
        value="$(printf '%s' "$value" | sed 's/[[:space:]]*#[^"]*$//')"   # trailing comment
        echo "model_providers.$PROVIDER_ID.$key=$value"
    done < <(sed -n "/^\[model_providers\.$PROVIDER_ID\]/,/^\[/p" "$DIR/config_template.toml" | grep -v '^\[')
}

# --- the model: FORCED_MODEL when the proxy forces one, unless the user chose one -----
# Codex shapes its request by model name (its built-in default sends an internal "lite"
# body), so it should know the model that really answers.
user_chose_model() {
    local arg prev=""
    for arg in "$@"; do
        case "$arg" in
            -m | --model | --model=* | -m?*) return 0 ;;
            model=* | model[[:space:]]*=*) [ "$prev" = -c ] || [ "$prev" = --config ] && return 0 ;;
            --config=model=* | --config=model[[:space:]]*) return 0 ;;
        esac
        prev="$arg"
    done
    return 1
}
forced_model() { # FORCED_MODEL as the proxy sees it (env over .env), empty when unset
    (cd "$DIR" && "$proxy_bin" ${proxy_args[@]+"${proxy_args[@]}"} --check 2>/dev/null) |
        sed -n 's/^FORCED_MODEL[[:space:]]\{1,\}//p' | grep -v '^(' || true
}

# --- health check: curl when present, else bash's /dev/tcp ---------------------
healthy() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 2 "http://127.0.0.1:$1/healthz" 2>/dev/null | grep -q '"ok"'
    else
        (
            exec 3<>"/dev/tcp/127.0.0.1/$1"
            printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
            IFS= read -r -t 2 status_line <&3
            case "$status_line" in "HTTP/1."?" 200"*) exit 0 ;; *) exit 1 ;; esac
        ) 2>/dev/null
    fi
}

# --- is a process still running?  A zombie (state Z: exited, not yet reaped) is not:
# a caller that reads Codex's output to the end before it reaps it (subprocess.run with
# capture_output, $(...)) keeps it a zombie until every holder of its pipes lets go, and
# a proxy whose parent is gone can stay a zombie when init does not reap.  /proc, else ps.
alive() { # alive PID
    local stat
    if [ -r /proc/self/stat ]; then
        { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
        stat="${stat##*) }"   # past "PID (comm) ": comm may hold spaces and parentheses
    else
        stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
        stat="${stat#"${stat%%[![:space:]]*}"}"
    fi
    case "$stat" in '' | Z* | X* | x*) return 1 ;; esac
}

# --- cleanup before Codex starts: stop our proxy (and only ours), remove temp files
state_dir="" proxy_pid="" watchdog_pid="" pending=""
# shellcheck disable=SC2317  # reached from the traps below, which shellcheck cannot follow
cleanup() {
    set +e
    trap '' INT TERM HUP
    [ -n "$watchdog_pid" ] && kill -KILL "$watchdog_pid" 2>/dev/null
    if [ -n "$proxy_pid" ]; then
        kill -TERM "$proxy_pid" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30; do
            alive "$proxy_pid" || break
            sleep 0.1
        done
        kill -KILL "$proxy_pid" 2>/dev/null
        wait "$proxy_pid" 2>/dev/null
    fi
    [ -n "$state_dir" ] && rm -rf "$state_dir"
}
# shellcheck disable=SC2317  # reached from the traps that on_signals sets
later() { pending="$1"; }   # a signal while the temporary folder is being made
# shellcheck disable=SC2064  # the handler is chosen now, on purpose
on_signals() { trap "$1 130" INT; trap "$1 143" TERM; trap "$1 129" HUP; }
trap cleanup EXIT
on_signals exit

# --- start this session's proxy ------------------------------------------------
command -v "$CLIENT_EXECUTABLE" >/dev/null 2>&1 ||
    { echo "$me: '$CLIENT_EXECUTABLE' not found (npm install -g @openai/codex@0.169.0, or set CLIENT_EXECUTABLE)" >&2; exit 127; }
proxy_bin="$(find_proxy)"
# mktemp runs with INT/TERM/HUP ignored, and a signal to the wrapper meanwhile waits until
# $state_dir names the folder: none lands between the two and leaves the folder behind
on_signals later
state_dir="$(trap '' INT TERM HUP; mktemp -d "${TMPDIR:-/tmp}/codex-shield.XXXXXX")"
on_signals exit
[ -z "$pending" ] || exit "$pending"
[ -n "$PROXY_LOG" ] || PROXY_LOG="$state_dir/proxy.log"
: >>"$PROXY_LOG"
log_start=$(($(wc -c <"$PROXY_LOG") + 1))
session_key="cs-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
status_token="st-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
proxy_args=()
[ -f "$DIR/.env" ] && proxy_args+=(--env-file "$DIR/.env")
own_session=()   # the proxy in its own session: Ctrl-C and the terminal's HUP are Codex's only
command -v setsid >/dev/null 2>&1 && own_session=(setsid)

# PORT=0: a free port per session; HOST pinned to loopback; a per-session inbound
# key so only this Codex can use this proxy, and a read-only token for its /status page;
# a short grace since Codex is gone. Keepalive events every 15 s keep Codex's stream idle
# timer from expiring while the shield retries, with the shield's progress as its status
# line (CODEX_SHIELD_KEEPALIVE_SECONDS=0 turns both off).
(
    cd "$DIR"
    HOST=127.0.0.1 PORT=0 PROXY_API_KEY="$session_key" STATUS_TOKEN="$status_token" SHUTDOWN_GRACE_SECONDS=2 \
        KEEPALIVE_SECONDS="${CODEX_SHIELD_KEEPALIVE_SECONDS:-15}" CODEX_PROGRESS=true \
        exec ${own_session[@]+"${own_session[@]}"} "$proxy_bin" ${proxy_args[@]+"${proxy_args[@]}"}
) </dev/null >>"$PROXY_LOG" 2>&1 &
proxy_pid=$!

# Codex replaces this script (exec, same PID) so that it owns the terminal and its
# signals exactly as when run directly.  The watchdog outlives the script: once that
# PID has exited (Codex exited, or anything killed it; a zombie counts as exited) it
# says if the proxy had died, lets go of the caller's stderr (it never holds stdout or
# stdin: whoever reads Codex's output to the end sees the end when Codex exits), then
# stops the proxy and removes the temporary files.  It runs without set -e so that every
# step is reached whatever fails before it (a proxy already gone makes kill fail).  It
# ignores INT/HUP/TERM (a Ctrl-C or a closed terminal reaches the whole process group)
# and PIPE, and ticks with `read -t` on a private FIFO: no sleep child.
wrapper_pid=$$
mkfifo "$state_dir/tick"
(
    set +euo pipefail
    trap '' INT HUP TERM QUIT PIPE   # PIPE: a caller that closed stderr only fails the note
    exec 3<>"$state_dir/tick"
    while alive "$wrapper_pid"; do read -r -t 0.1 -u 3 _tick; done
    if [ -f "$state_dir/codex" ] && ! alive "$proxy_pid"; then
        echo "$me: note: the codex-shield proxy stopped during the session; its output:" >&2
        tail -c +"$log_start" "$PROXY_LOG" | tail -n 20 | sed 's/^/    /' >&2
    fi
    exec 2>/dev/null   # the caller's stderr: released before the wait below
    alive "$proxy_pid" && kill -TERM "$proxy_pid"
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30; do
        alive "$proxy_pid" || break
        read -r -t 0.1 -u 3 _tick
    done
    alive "$proxy_pid" && kill -KILL "$proxy_pid"   # only if still running: never a reused PID
    rm -rf "$state_dir"
) </dev/null >/dev/null &
watchdog_pid=$!

proxy_failed() {
    echo "$me: the codex-shield proxy $1; its output:" >&2
    tail -c +"$log_start" "$PROXY_LOG" | sed 's/^/    /' >&2
    exit 1
}

port=""
deadline=$((SECONDS + STARTUP_TIMEOUT_SECONDS))
while :; do
    if ! kill -0 "$proxy_pid" 2>/dev/null; then
        rc=0
        wait "$proxy_pid" || rc=$?
        proxy_pid=""
        proxy_failed "exited with status $rc before it was ready"
    fi
    if [ -z "$port" ]; then
        port="$(tail -c +"$log_start" "$PROXY_LOG" | sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' | head -n 1)"
    fi
    if [ -n "$port" ] && healthy "$port"; then
        break
    fi
    [ "$SECONDS" -lt "$deadline" ] || proxy_failed "did not answer /healthz within ${STARTUP_TIMEOUT_SECONDS}s"
    sleep 0.1
done

# --- run the client against it -------------------------------------------------
echo "$me: codex-shield status: http://127.0.0.1:$port/status?token=$status_token" >&2
ensure_profile
# --no-daemon: a shared background server reads only the config files, never this
# session's port; said explicitly, Codex does not warn that -c "requires embedded mode".
overrides=()
case " $* " in *" --remote "* | *" --remote="*) ;; *) overrides+=(--no-daemon) ;; esac
while IFS= read -r line; do overrides+=(-c "$line"); done < <(provider_overrides "$port")
model="$(forced_model)"
if [ -n "$model" ] && ! user_chose_model "$@"; then
    overrides+=(-c "model=\"$model\"")
fi
export CODEX_HOME="$CLIENT_CONFIG_DIR"
export CODEX_SHIELD_API_KEY="$session_key"
: >"$state_dir/codex"   # from here on the watchdog owns the proxy's end
trap - EXIT INT TERM HUP
exec "$CLIENT_EXECUTABLE" "${overrides[@]}" "$@"
