#!/usr/bin/env bash
# gvisor-sync.sh regenerates third_party/gvisor, the copy of gVisor that the
# build uses (go.mod: replace gvisor.dev/gvisor => ./third_party/gvisor):
# the pinned module (the version that go.mod requires, from the module
# cache; `go mod download` fetches it through the module proxy) cut down to
# the packages that vipmux and its tests import, with the patches of
# third_party/gvisor-patches applied in name order. docs/gvisor-patches.md
# says what each patch does and how to move to a newer gVisor.
#
#   scripts/gvisor-sync.sh          rewrite third_party/gvisor
#   scripts/gvisor-sync.sh --check  regenerate into a temporary directory and
#                                   fail if third_party/gvisor differs
#
# The output depends only on the pinned version, the patches and the
# import graph of this module, so two runs give the same tree.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
mod=gvisor.dev/gvisor
out=third_party/gvisor
patches=third_party/gvisor-patches

check=false
case "${1:-}" in
"") ;;
--check) check=true ;;
*) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

version=$(awk -v m="$mod" '$1 == m && $2 ~ /^v/ { print $2; exit }' go.mod)
[ -n "$version" ] || { echo "gvisor-sync: no require of $mod in go.mod" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# pristine is this module's go.mod and go.sum without the replace: it reads
# the pinned module from the module cache (go mod tidy drops the module's
# go.sum lines once it is replaced; -mod=mod, only here, fetches and checks
# them again).
mkdir "$tmp/pristine"
$GO mod edit -dropreplace="$mod" -print >"$tmp/pristine/go.mod"
cp go.sum "$tmp/pristine/go.sum"
src=$(cd "$tmp/pristine" && GOFLAGS="${GOFLAGS:-} -mod=mod" $GO mod download -json "$mod@$version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
[ -d "$src" ] || { echo "gvisor-sync: go mod download $mod@$version gave no directory" >&2; exit 1; }

# The packages: what this module and its tests import from gVisor, resolved
# against the pristine module for the Linux architectures the build targets,
# then closed over the imports of every file whatever its build tags, as go
# mod tidy reads them (gvisor-closure.go). A patch that imports a gVisor
# package outside this set needs that package added here.
pkgs=$(for arch in amd64 arm64; do
	GOOS=linux GOARCH=$arch $GO list -mod=mod -modfile="$tmp/pristine/go.mod" -deps -test ./...
done | grep "^$mod/" | grep -v -e ' ' -e '\.test$' | $GO run scripts/gvisor-closure.go "$src")

gen=$tmp/gvisor
mkdir -p "$gen"
install -m 0644 "$src/go.mod" "$src/LICENSE" "$gen/"
for p in $pkgs; do
	d=${p#"$mod/"}
	mkdir -p "$gen/$d"
	# Every build file of the package, for every platform: Go sources
	# other than tests, and assembly.
	find "$src/$d" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
		-exec install -m 0644 -t "$gen/$d" {} +
done
for pf in "$patches"/*.patch; do
	[ -e "$pf" ] || continue
	if ! patch -d "$gen" -p1 -F0 -s --forward --no-backup-if-mismatch -r - <"$pf"; then
		echo "gvisor-sync: $pf does not apply to $mod@$version (see docs/gvisor-patches.md, rebasing)" >&2
		exit 1
	fi
done

if $check; then
	if ! diff -r "$gen" "$out" >"$tmp/diff"; then
		head -n 40 "$tmp/diff" >&2
		echo "gvisor-sync: $out is not $mod@$version + $patches; run scripts/gvisor-sync.sh" >&2
		exit 1
	fi
	echo "gvisor-sync: $out = $mod@$version + $(ls "$patches"/*.patch 2>/dev/null | wc -l) patches"
	exit 0
fi
rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -R "$gen" "$out"
echo "gvisor-sync: wrote $out ($mod@$version, $(wc -w <<<"$pkgs") packages, $(ls "$patches"/*.patch 2>/dev/null | wc -l) patches)"
