package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

// TestBuildVersion checks where the version and the commit come from: the
// linker flags of make build first, then what the Go toolchain recorded
// (go install's module version; go build's VCS stamp), then "dev".
func TestBuildVersion(t *testing.T) {
	stamped := func(mainVersion string, settings ...string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/vipmux/vipmux", Version: mainVersion}}
			for i := 0; i < len(settings); i += 2 {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
			}
			return bi, true
		}
	}
	vcs := []string{"vcs.revision", "1f77b0a0555c01afcccc270e75dc2b5e5280d178", "vcs.time", "2026-12-01T04:46:09Z"}
	tests := []struct {
		name                 string
		ldVersion, ldCommit  string
		info                 func() (*debug.BuildInfo, bool)
		wantVersion, wantRev string
	}{
		{"make build", "v1.4.0-3-gabc1234", "abc1234", stamped("v0.0.0-20261201044609-1f77b0a0555c", vcs...), "v1.4.0-3-gabc1234", "abc1234"},
		{"go build in a checkout", "", "", stamped("v0.0.0-20261201044609-1f77b0a0555c", vcs...), "v0.0.0-20261201044609-1f77b0a0555c", "1f77b0a0555c"},
		{"go build, dirty", "", "", stamped("v0.0.0-20261201044609-1f77b0a0555c+dirty", append(vcs, "vcs.modified", "true")...), "v0.0.0-20261201044609-1f77b0a0555c+dirty", "1f77b0a0555c"},
		{"go build, no version stamp", "", "", stamped("(devel)", append(vcs, "vcs.modified", "true")...), "devel 2026-12-01T04:46:09Z+dirty", "1f77b0a0555c"},
		{"go install module@v1.2.3", "", "", stamped("v1.2.3"), "v1.2.3", "unknown"},
		{"go build -buildvcs=false", "", "", stamped("(devel)"), "dev", "unknown"},
		{"no build info", "", "", func() (*debug.BuildInfo, bool) { return nil, false }, "dev", "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			oldV, oldC, oldR := version, commit, readBuildInfo
			t.Cleanup(func() { version, commit, readBuildInfo = oldV, oldC, oldR })
			version, commit, readBuildInfo = tc.ldVersion, tc.ldCommit, tc.info
			if got := buildVersion(); got != tc.wantVersion {
				t.Errorf("buildVersion() = %q, want %q", got, tc.wantVersion)
			}
			if got := buildRevision(); got != tc.wantRev {
				t.Errorf("buildRevision() = %q, want %q", got, tc.wantRev)
			}
			out, err := runApp("version")
			if err != nil {
				t.Fatalf("vipmux version: %v", err)
			}
			if !strings.HasPrefix(out, "vipmux "+tc.wantVersion+"\ncommit "+tc.wantRev+"\n") {
				t.Errorf("vipmux version =\n%s\nwant it to start with vipmux %s, commit %s", out, tc.wantVersion, tc.wantRev)
			}
		})
	}
}
