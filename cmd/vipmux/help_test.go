package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// runApp runs a fresh app with args (after "vipmux") and returns what it
// wrote and its error.
func runApp(args ...string) (string, error) {
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run(append([]string{"vipmux"}, args...))
	return out.String(), err
}

// TestHelpHasExamples checks that vipmux --help and every command's --help
// are man-style: a description with examples of the command itself.
func TestHelpHasExamples(t *testing.T) {
	cases := [][]string{{"--help"}}
	for _, cmd := range newApp().VisibleCommands() {
		cases = append(cases, []string{cmd.Name, "--help"})
	}
	for _, args := range cases {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, err := runApp(args...)
			if err != nil {
				t.Fatalf("vipmux %s: %v", strings.Join(args, " "), err)
			}
			want := "vipmux " + strings.TrimSuffix(strings.Join(args[:len(args)-1], " ")+" ", " ")
			for _, w := range []string{"DESCRIPTION:", "Example", "\n      " + want} {
				if !strings.Contains(out, w) {
					t.Errorf("vipmux %s output lacks %q:\n%s", strings.Join(args, " "), w, out)
				}
			}
		})
	}
}

func TestManPage(t *testing.T) {
	out, err := runApp("man")
	if err != nil {
		t.Fatalf("vipmux man: %v", err)
	}
	wants := []string{".TH VIPMUX 8 ", ".SH NAME\nvipmux \\- ", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH COMMANDS",
		".SH EXAMPLES", ".SH FILES", ".SH ENVIRONMENT", ".SH EXIT STATUS", "/var/lib/vipmux/state.json",
		".SH GLOBAL OPTIONS", `.B \-\-gateway ADDRESS`, `.B \-\-config FILE`}
	for _, cmd := range newApp().VisibleCommands() {
		wants = append(wants, `.SS "vipmux `+cmd.Name+`"`)
		// The command's first example line, as the man page escapes it.
		_, examples, ok := strings.Cut(cmd.Description, "Examples:\n")
		if !ok {
			_, examples, ok = strings.Cut(cmd.Description, "Example:\n")
		}
		if !ok {
			t.Errorf("command %s: description has no examples", cmd.Name)
			continue
		}
		first, _, _ := strings.Cut(strings.TrimSpace(examples), "\n")
		wants = append(wants, ".EX\n"+roffEscape(first)+"\n")
		for _, f := range cmd.VisibleFlags() {
			wants = append(wants, ".B "+roffEscape(flagName(f.Names()[0])))
		}
	}
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("vipmux man lacks %q", w)
		}
	}
	// groff, when present, must render it without a warning.
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Logf("no groff: the page was not rendered")
		return
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(out)
	if b, err := cmd.CombinedOutput(); err != nil || len(b) > 0 {
		t.Errorf("groff -man -ww: %v\n%s", err, b)
	}
}

func TestRoffEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"--config FILE", `\-\-config FILE`},
		{`a\b`, `a\eb`},
		{".starts with a dot", `\&.starts with a dot`},
		{"'quote", `\&'quote`},
		{"plain text", "plain text"},
	} {
		if got := roffEscape(tc.in); got != tc.want {
			t.Errorf("roffEscape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestHelpCommand checks that vipmux help COMMAND is COMMAND --help, and
// vipmux help is vipmux --help.
func TestHelpCommand(t *testing.T) {
	for _, tc := range [][2][]string{
		{{"help", "register"}, {"register", "--help"}},
		{{"help", "check"}, {"check", "--help"}},
		{{"help"}, {"--help"}},
	} {
		got, err := runApp(tc[0]...)
		if err != nil {
			t.Fatalf("vipmux %s: %v", strings.Join(tc[0], " "), err)
		}
		want, _ := runApp(tc[1]...)
		if got != want {
			t.Errorf("vipmux %s differs from vipmux %s:\n%s\nwant:\n%s", strings.Join(tc[0], " "), strings.Join(tc[1], " "), got, want)
		}
	}
}

// TestUsageErrors checks that a mistake on the command line is one line
// that names the flag or command, and a hint to --help, with no help text
// dumped; and that it is found before any gateway is called.
func TestUsageErrors(t *testing.T) {
	// Nothing listens here: a usage error must come before any call.
	t.Setenv("VIPMUX_GATEWAY", "127.0.0.1:1")
	const regHint = "Run 'vipmux register --help' for its flags and examples."
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"regster"}, "vipmux: unknown command \"regster\"; did you mean \"register\"?\nRun 'vipmux --help' for the commands."},
		{[]string{"help", "regster"}, "vipmux: unknown command \"regster\"; did you mean \"register\"?\nRun 'vipmux --help' for the commands."},
		{[]string{"stauts"}, "vipmux: unknown command \"stauts\"; did you mean \"status\"?\nRun 'vipmux --help' for the commands."},
		{[]string{"frobnicate"}, "vipmux: unknown command \"frobnicate\"\nRun 'vipmux --help' for the commands."},
		{[]string{"register", "--name", "a", "--backend", "198.19.0.2", "--ttl", "5"}, "vipmux: register: --ttl \"5\": write a duration such as \"5s\", \"500ms\" or \"1m30s\" (units ns, us, ms, s, m, h)\n" + regHint},
		{[]string{"register", "--nme", "a"}, "vipmux: register: unknown flag --nme; did you mean --name?\n" + regHint},
		{[]string{"register", "--name"}, "vipmux: register: --name needs a value\n" + regHint},
		{[]string{"register", "--name", "a", "--backend", "198.19.0.2", "--ip", "198.18.0"}, "vipmux: register: --ip \"198.18.0\": write an IPv4 or IPv6 address such as \"198.18.0.10\" or \"2001:db8::10\"\n" + regHint},
		{[]string{"register", "--name", "a", "--backend", "198.19.0.2", "--port", "70000"}, "vipmux: register: --port \"70000\": write a port number 1..65535\n" + regHint},
		{[]string{"register", "--name", "a", "--backend", "198.19.0.2", "--state", "on"}, "vipmux: register: --state \"on\": write active or standby\n" + regHint},
		{[]string{"register", "--name", "a"}, "vipmux: register: --backend is required (or --file FILE)\n" + regHint},
		{[]string{"switch", "--port", "8080"}, "vipmux: switch: --to is required\nRun 'vipmux switch --help' for its flags and examples."},
		{[]string{"status", "now"}, "vipmux: status: unexpected argument \"now\" (flags go before it)\nRun 'vipmux status --help' for its flags and examples."},
		{[]string{"--config", "/etc/vipmux/vipmux.toml", "serve"}, "vipmux: --config before serve: serve takes its own flags after it (vipmux serve --config FILE)\nRun 'vipmux --help' for the commands."},
		{[]string{"--timeout", "soon", "status"}, "vipmux: --timeout \"soon\": write a duration such as \"5s\", \"500ms\" or \"1m30s\" (units ns, us, ms, s, m, h)\nRun 'vipmux --help' for the commands."},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := runApp(tc.args...)
			if err == nil {
				t.Fatalf("vipmux %s: no error, want %q", strings.Join(tc.args, " "), tc.want)
			}
			if got := errorText(err); got != tc.want {
				t.Errorf("vipmux %s prints\n%s\nwant\n%s", strings.Join(tc.args, " "), got, tc.want)
			}
			if out != "" {
				t.Errorf("vipmux %s also wrote %q; want nothing but the error", strings.Join(tc.args, " "), out)
			}
		})
	}
}

// TestHelpPlaceholders checks that every flag that takes a value shows a
// placeholder that says what to write (not cli's "value"), and that no
// flag shows a meaningless "(default: 0)".
func TestHelpPlaceholders(t *testing.T) {
	cases := [][]string{{"--help"}}
	for _, cmd := range newApp().VisibleCommands() {
		cases = append(cases, []string{cmd.Name, "--help"})
	}
	for _, args := range cases {
		out, err := runApp(args...)
		if err != nil {
			t.Fatalf("vipmux %s: %v", strings.Join(args, " "), err)
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && strings.HasPrefix(f[0], "--") && strings.TrimSuffix(f[1], ",") == "value" {
				t.Errorf("vipmux %s: flag without a placeholder: %q", strings.Join(args, " "), strings.TrimSpace(line))
			}
			for _, noise := range []string{"(default: 0)", "(default: 0s)", `(default: "")`} {
				if strings.Contains(line, noise) {
					t.Errorf("vipmux %s: %q shows %s", strings.Join(args, " "), strings.TrimSpace(line), noise)
				}
			}
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"register", "regster", 1}, {"status", "stauts", 1}, {"name", "nmae", 1}, {"", "abc", 3}, {"switch", "switch", 0}, {"renew", "reload", 4},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
