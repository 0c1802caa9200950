package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=..."
// (make build). A plain go build or go install leaves them empty, and
// buildVersion and buildRevision read what the Go toolchain recorded
// instead.
var (
	version = ""
	commit  = ""
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print version, commit, Go and gVisor versions",
		Description: `Prints the release (git describe at build time, or the module version
that go install recorded), the commit, and the versions of Go and gVisor
that the binary was built with: what a bug report needs. vipmux --version
prints the release alone.

Example:
   vipmux version`,
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "vipmux %s\ncommit %s\n%s\ngvisor %s\n", buildVersion(), buildRevision(), runtime.Version(), gvisorVersion())
			return nil
		},
	}
}

// readBuildInfo is debug.ReadBuildInfo; tests replace it.
var readBuildInfo = debug.ReadBuildInfo

// buildVersion is the release: main.version if the build set it; else the
// module version that go install recorded (v1.2.3); else, for a go build
// in a checkout, "devel" with the commit's date and "+dirty" for
// uncommitted changes, as the Go toolchain stamps it; else "dev".
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := readBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	s := buildSettings(bi)
	if s["vcs.revision"] == "" {
		return "dev"
	}
	v := "devel"
	if t := s["vcs.time"]; t != "" {
		v += " " + t
	}
	if s["vcs.modified"] == "true" {
		v += "+dirty"
	}
	return v
}

// buildRevision is the commit: main.commit if the build set it, else the
// vcs.revision that go build recorded (shortened to 12 digits), else
// "unknown".
func buildRevision() string {
	if commit != "" {
		return commit
	}
	bi, ok := readBuildInfo()
	if !ok {
		return "unknown"
	}
	rev := buildSettings(bi)["vcs.revision"]
	if rev == "" {
		return "unknown"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return rev
}

// buildSettings are bi's settings (vcs.revision, vcs.time, ...) by key.
func buildSettings(bi *debug.BuildInfo) map[string]string {
	m := make(map[string]string, len(bi.Settings))
	for _, s := range bi.Settings {
		m[s.Key] = s.Value
	}
	return m
}

func gvisorVersion() string {
	bi, ok := readBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range bi.Deps {
		if d.Path == "gvisor.dev/gvisor" {
			return d.Version
		}
	}
	return "unknown"
}
