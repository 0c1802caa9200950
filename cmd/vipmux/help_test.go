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
		".SH EXAMPLES", ".SH FILES", ".SH ENVIRONMENT", ".SH EXIT STATUS", "/var/lib/vipmux/state.json"}
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
