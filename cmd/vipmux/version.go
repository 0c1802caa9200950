package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print version, commit, Go and gVisor versions",
		Description: `Prints the release (git describe at build time), the commit, and the
versions of Go and gVisor that the binary was built with: what a bug report
needs. vipmux --version prints the release alone.

Example:
   vipmux version`,
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "vipmux %s\ncommit %s\n%s\ngvisor %s\n", version, commit, runtime.Version(), gvisorVersion())
			return nil
		},
	}
}

func gvisorVersion() string {
	bi, ok := debug.ReadBuildInfo()
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
