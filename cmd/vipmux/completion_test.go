package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCompletionScripts(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    []string
		wantErr string
	}{
		{args: []string{"completion", "bash"}, want: []string{"complete -o bashdefault -o default -F _vipmux vipmux", "--generate-bash-completion"}},
		{args: []string{"completion", "zsh"}, want: []string{"#compdef vipmux", "compdef _vipmux vipmux", "--generate-bash-completion"}},
		{args: []string{"completion", "fish"}, want: []string{"complete -c vipmux", "-a 'serve'", "-a 'register'"}},
		{args: []string{"completion", "tcsh"}, wantErr: `completion: unknown shell "tcsh" (want bash, zsh, fish)`},
		{args: []string{"completion"}, wantErr: "completion: want one argument, the shell: bash, zsh, fish"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := runApp(tc.args...)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("vipmux %s: err %v, want %q", strings.Join(tc.args, " "), err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("vipmux %s: %v", strings.Join(tc.args, " "), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("vipmux %s lacks %q:\n%s", strings.Join(tc.args, " "), w, out)
				}
			}
		})
	}
}

// completionScript writes `vipmux completion SHELL` to a file named name in
// a temporary directory that also holds this test binary as vipmux (see
// TestMain); it returns the directory, for PATH, and the script's path.
func completionScript(t *testing.T, shell, name string) (dir, scriptPath string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	if err := os.Symlink(exe, filepath.Join(dir, "vipmux")); err != nil {
		t.Fatal(err)
	}
	script, err := runApp("completion", shell)
	if err != nil {
		t.Fatal(err)
	}
	scriptPath = filepath.Join(dir, name)
	if err := os.WriteFile(scriptPath, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, scriptPath
}

// TestBashCompletion sources `vipmux completion bash` in a real bash and
// completes command lines with this test binary as vipmux (TestMain).
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	dir, scriptPath := completionScript(t, "bash", "vipmux.bash")
	for _, tc := range []struct {
		line     string // what the user typed before TAB
		want     []string
		wantNone bool
	}{
		{line: "vipmux ", want: []string{"serve", "register", "deregister", "switch", "renew", "run", "status", "version", "completion", "man"}},
		{line: "vipmux reg", want: []string{"register"}},
		{line: "vipmux serve --c", want: []string{"--config"}},
		{line: "vipmux serve ", want: []string{"--config", "--log-level", "--log-format", "--reset-state", "--help"}},
		{line: "vipmux register --name web-a --b", want: []string{"--backend"}},
		{line: "vipmux completion ", want: []string{"bash", "zsh", "fish"}},
		{line: "vipmux serve --config ", wantNone: true}, // a file name comes next
		{line: "vipmux register --state ", want: []string{"active", "standby"}},
		{line: "vipmux register --proxy-protocol ", want: []string{"none", "v1", "v2"}},
		{line: "vipmux run --state a", want: []string{"active"}},
		{line: "vipmux serve --log-level ", want: []string{"debug", "info", "warn", "error"}},
		{line: "vipmux serve --log-format ", want: []string{"text", "json"}},
		{line: "vipmux events --f", want: []string{"--follow"}},
		{line: "vipmux status --d", want: []string{"--down"}},
	} {
		t.Run(tc.line, func(t *testing.T) {
			cmd := exec.Command(bash, "--norc", "--noprofile", "-c", `
source "$1"
read -ra COMP_WORDS <<< "$2"
[[ $2 == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
_vipmux
printf '%s\n' "${COMPREPLY[@]}"`, "bash", scriptPath, tc.line)
			cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "VIPMUX_TEST_MAIN=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("bash completion of %q: %v\n%s", tc.line, err, out)
			}
			got := strings.Fields(string(out))
			if tc.wantNone {
				if len(got) != 0 {
					t.Errorf("completion of %q = %q, want none", tc.line, got)
				}
				return
			}
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("completion of %q = %q, want it to contain %q", tc.line, got, w)
				}
			}
		})
	}
}

// TestZshCompletion sources `vipmux completion zsh` in a real zsh, with
// the completion system's _describe and _files replaced by functions that
// print what they are given, and completes command lines with this test
// binary as vipmux. zsh is not a dependency of vipmux, but make test
// installs it (DEB_TOOLS): without it the test skips, except in CI
// (CI=true), where that is a failure.
func TestZshCompletion(t *testing.T) {
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("zsh is missing; CI=true, so this is a failure, not a skip (make deps installs it)")
		}
		t.Skip("no zsh")
	}
	dir, scriptPath := completionScript(t, "zsh", "_vipmux")
	if out, err := exec.Command(zsh, "-n", scriptPath).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n _vipmux: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		words []string // the command line, the word being completed last
		want  []string
	}{
		{words: []string{"vipmux", ""}, want: []string{"serve", "register", "switch", "completion", "man"}},
		{words: []string{"vipmux", "serve", "--c"}, want: []string{"--config"}},
		{words: []string{"vipmux", "register", "--name", "web-a", ""}, want: []string{"--backend", "--ip", "--port", "--ttl"}},
		{words: []string{"vipmux", "serve", "--config", ""}, want: []string{"FILES"}},
		{words: []string{"vipmux", "register", "--state", ""}, want: []string{"active", "standby"}},
		{words: []string{"vipmux", "serve", "--log-level", ""}, want: []string{"debug", "info", "warn", "error"}},
	} {
		t.Run(strings.Join(tc.words, " "), func(t *testing.T) {
			cmd := exec.Command(zsh, "-f", "-c", `
_describe() { print -rl -- "${(@P)2}" }
_files() { print -r -- FILES }
compdef() { }
source "$1"
shift
words=("$@")
_vipmux`, "zsh", scriptPath)
			cmd.Args = append(cmd.Args, tc.words...)
			cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "VIPMUX_TEST_MAIN=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("zsh completion of %q: %v\n%s", tc.words, err, out)
			}
			got := strings.Fields(string(out))
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("completion of %q = %q, want it to contain %q", tc.words, got, w)
				}
			}
		})
	}
}

// TestFishCompletionScript checks the fish script: file names for the
// flags that take a file (urfave/cli writes -f, no files, unless a flag
// says TakesFile), none for the others, and the values of the flags that
// take one of a few words. fish is not installed here, so the script is
// read as text; each complete line is one rule.
func TestFishCompletionScript(t *testing.T) {
	script, err := runApp("completion", "fish")
	if err != nil {
		t.Fatal(err)
	}
	rule := func(cond, flag string) []string {
		var rules []string
		for _, line := range strings.Split(script, "\n") {
			if strings.Contains(line, "-n '"+cond+"'") && strings.Contains(line, " -l "+flag+" ") {
				rules = append(rules, line)
			}
		}
		return rules
	}
	for _, tc := range []struct {
		cond, flag string
		wantFiles  bool
		wantValues string // the -a list, "" for none
	}{
		{cond: "__fish_seen_subcommand_from serve", flag: "config", wantFiles: true},
		{cond: "__fish_seen_subcommand_from serve", flag: "pcap", wantFiles: true},
		{cond: "__fish_seen_subcommand_from check", flag: "config", wantFiles: true},
		{cond: "__fish_seen_subcommand_from register", flag: "file", wantFiles: true},
		{cond: "__fish_seen_subcommand_from status", flag: "token-file", wantFiles: true},
		{cond: "__fish_seen_subcommand_from register", flag: "name"},
		{cond: "__fish_seen_subcommand_from register", flag: "state", wantValues: "active standby"},
		{cond: "__fish_seen_subcommand_from register", flag: "proxy-protocol", wantValues: "none v1 v2"},
		{cond: "__fish_seen_subcommand_from run", flag: "state", wantValues: "active standby"},
		{cond: "__fish_seen_subcommand_from serve", flag: "log-level", wantValues: "debug info warn error"},
		{cond: "__fish_seen_subcommand_from serve", flag: "log-format", wantValues: "text json"},
	} {
		t.Run(tc.cond+" --"+tc.flag, func(t *testing.T) {
			rules := rule(tc.cond, tc.flag)
			if len(rules) == 0 {
				t.Fatalf("no fish rule for --%s under %s", tc.flag, tc.cond)
			}
			files, values := true, ""
			for _, r := range rules {
				if strings.Contains(r, " -f ") || strings.Contains(r, " -x ") {
					files = false
				}
				if _, v, ok := strings.Cut(r, " -a '"); ok {
					values, _, _ = strings.Cut(v, "'")
				}
			}
			if files != tc.wantFiles {
				t.Errorf("fish completes file names for --%s under %s: %v, want %v:\n%s", tc.flag, tc.cond, files, tc.wantFiles, strings.Join(rules, "\n"))
			}
			if values != tc.wantValues {
				t.Errorf("fish values of --%s under %s = %q, want %q", tc.flag, tc.cond, values, tc.wantValues)
			}
		})
	}
}
