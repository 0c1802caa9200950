package main

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// The values below are the client's typed flags: each checks what is
// typed as it is parsed, so that a mistake is reported before the gateway
// is called, in words that say how to write it, and help shows no
// "(default: 0)" for a flag that has no default. c.Int, c.Duration and
// c.String read them as usual (through String).

// durationValue is a flag.Value for a Go duration such as "5s".
type durationValue struct {
	d   time.Duration
	set bool
}

// Set implements flag.Value.
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New(`write a duration such as "5s", "500ms" or "1m30s" (units ns, us, ms, s, m, h)`)
	}
	v.d, v.set = d, true
	return nil
}

// String implements flag.Value: "" when neither set nor defaulted.
func (v *durationValue) String() string {
	if v == nil || (!v.set && v.d == 0) {
		return ""
	}
	return v.d.String()
}

// durationFlag is a flag holding a duration; def 0 means no default.
func durationFlag(name string, def time.Duration, usage string) *cli.GenericFlag {
	return &cli.GenericFlag{Name: name, Value: &durationValue{d: def}, Usage: usage}
}

// portValue is a flag.Value for a TCP port, 1..65535.
type portValue struct{ p int }

// Set implements flag.Value.
func (v *portValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return errors.New("write a port number 1..65535")
	}
	v.p = n
	return nil
}

// String implements flag.Value: "" when not set.
func (v *portValue) String() string {
	if v == nil || v.p == 0 {
		return ""
	}
	return strconv.Itoa(v.p)
}

// portFlagOf is a flag holding a port.
func portFlagOf(name, usage string) *cli.GenericFlag {
	return &cli.GenericFlag{Name: name, Value: &portValue{}, Usage: usage}
}

// ipValue is a flag.Value for an IPv4 or IPv6 address.
type ipValue struct{ a netip.Addr }

// Set implements flag.Value.
func (v *ipValue) Set(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return errors.New(`write an IPv4 or IPv6 address such as "198.18.0.10" or "2001:db8::10"`)
	}
	v.a = a
	return nil
}

// String implements flag.Value: "" when not set.
func (v *ipValue) String() string {
	if v == nil || !v.a.IsValid() {
		return ""
	}
	return v.a.String()
}

// choiceValue is a flag.Value that takes one of a few words.
type choiceValue struct {
	choices []string
	v       string
}

// Set implements flag.Value.
func (v *choiceValue) Set(s string) error {
	for _, c := range v.choices {
		if s == c {
			v.v = s
			return nil
		}
	}
	return fmt.Errorf("write %s", strings.Join(v.choices, " or "))
}

// String implements flag.Value.
func (v *choiceValue) String() string {
	if v == nil {
		return ""
	}
	return v.v
}

// choiceFlag is a flag that takes one of choices; def "" means no default.
func choiceFlag(name, def, usage string, choices ...string) *cli.GenericFlag {
	return &cli.GenericFlag{Name: name, Value: &choiceValue{choices: choices, v: def}, Usage: usage}
}

// usageError is a mistake on the command line. main prints it as one line
// and a hint to --help, not the whole help.
type usageError struct {
	// cmd is the command's name, "" for the app itself.
	cmd string
	msg string
}

func (e *usageError) Error() string { return e.msg }

// hint is the line that main prints under the error.
func (e *usageError) hint() string {
	if e.cmd == "" {
		return "Run 'vipmux --help' for the commands."
	}
	return "Run 'vipmux " + e.cmd + " --help' for its flags and examples."
}

// usageErrorf returns a usageError of c's command.
func usageErrorf(c *cli.Context, format string, args ...any) error {
	return &usageError{cmd: commandName(c), msg: fmt.Sprintf(format, args...)}
}

// commandName is the name of c's command, "" for the app.
func commandName(c *cli.Context) string {
	if c.Command == nil || c.Command.Name == c.App.Name {
		return ""
	}
	return c.Command.Name
}

// requireFlags reports the first of names that is not set, naming it.
// (The flags are not cli's Required: its error prints the whole help.)
func requireFlags(c *cli.Context, names ...string) error {
	for _, n := range names {
		if !c.IsSet(n) {
			return usageErrorf(c, "--%s is required", n)
		}
	}
	return nil
}

// Messages of Go's flag package, which cli passes on.
var (
	reInvalid   = regexp.MustCompile(`^invalid value "(.*)" for flag -([^:]+): (.*)$`)
	reUndefined = regexp.MustCompile(`^flag provided but not defined: -+(.*)$`)
	reNoArg     = regexp.MustCompile(`^flag needs an argument: -+(.*)$`)
)

// onUsageError is every command's OnUsageError: the flag package's
// message, said the way vipmux says it, as a usageError.
func onUsageError(c *cli.Context, err error, _ bool) error {
	msg := err.Error()
	if m := reInvalid.FindStringSubmatch(msg); m != nil {
		why := m[3]
		if why == "parse error" || strings.HasPrefix(why, "strconv.") {
			why = "write a number"
		}
		msg = fmt.Sprintf("%s %q: %s", flagName(m[2]), m[1], why)
	} else if m := reUndefined.FindStringSubmatch(msg); m != nil {
		msg = "unknown flag " + flagName(m[1])
		if c.Command != nil {
			var names []string
			for _, f := range c.Command.VisibleFlags() {
				names = append(names, f.Names()...)
			}
			if s := nearest(names, m[1]); s != "" {
				msg += fmt.Sprintf("; did you mean %s?", flagName(s))
			}
		}
	} else if m := reNoArg.FindStringSubmatch(msg); m != nil {
		msg = flagName(m[1]) + " needs a value"
	}
	return &usageError{cmd: commandName(c), msg: msg}
}
