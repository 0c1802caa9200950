package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// Shell completion follows urfave/cli's protocol: with EnableBashCompletion
// the app answers `vipmux WORDS... --generate-bash-completion` with the
// candidates for the next word, one per line. The scripts below ask it and
// hand the answer to the shell; they adapt urfave/cli v2's
// autocomplete/bash_autocomplete and zsh_autocomplete (which need the
// bash-completion package and a PROG variable) to work stand-alone, both
// installed and sourced.

const bashCompletion = `# bash completion for vipmux. Installed by make install, or:
#   source <(vipmux completion bash)
_vipmux() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	local words=("${COMP_WORDS[@]:0:COMP_CWORD}")
	if [[ $cur == -* ]]; then
		words+=("$cur")
	fi
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "$("${words[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
}
complete -o bashdefault -o default -F _vipmux vipmux
`

const zshCompletion = `#compdef vipmux
# zsh completion for vipmux. Installed by make install as _vipmux in a
# directory of $fpath, or: source <(vipmux completion zsh)
_vipmux() {
	local -a opts
	local cur=${words[-1]}
	if [[ $cur == -* ]]; then
		opts=("${(@f)$(${words[@]:0:#words[@]-1} $cur --generate-bash-completion 2>/dev/null)}")
	else
		opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
	fi
	if [[ -n ${opts[1]} ]]; then
		_describe 'values' opts
	else
		_files
	fi
}
if [[ $funcstack[1] == _vipmux ]]; then
	_vipmux "$@"
else
	compdef _vipmux vipmux
fi
`

// completionShells are the shells `vipmux completion` writes a script for.
var completionShells = []string{"bash", "zsh", "fish"}

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash, zsh or fish",
		ArgsUsage: "SHELL",
		Description: `Prints a script that completes vipmux's commands and flags in SHELL
(bash, zsh or fish). make install installs all three; to try one without
installing, source it.

Examples:
   source <(vipmux completion bash)
   vipmux completion zsh > "${fpath[1]}/_vipmux"
   vipmux completion fish > ~/.config/fish/completions/vipmux.fish`,
		BashComplete: func(c *cli.Context) {
			for _, s := range completionShells {
				fmt.Fprintln(c.App.Writer, s)
			}
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("completion: want one argument, the shell: %s", strings.Join(completionShells, ", "))
			}
			switch sh := c.Args().First(); sh {
			case "bash":
				_, err := fmt.Fprint(c.App.Writer, bashCompletion)
				return err
			case "zsh":
				_, err := fmt.Fprint(c.App.Writer, zshCompletion)
				return err
			case "fish":
				s, err := fishCompletion(c.App)
				if err != nil {
					return fmt.Errorf("completion fish: %w", err)
				}
				_, err = fmt.Fprint(c.App.Writer, s)
				return err
			default:
				return fmt.Errorf("completion: unknown shell %q (want %s)", sh, strings.Join(completionShells, ", "))
			}
		},
	}
}

// namedValues are the values of flags that take one of a few words but
// are plain string flags (serve's log overrides); choiceFlag's flags
// carry theirs.
var namedValues = map[string][]string{
	"log-level":  {"debug", "info", "warn", "error"},
	"log-format": {"text", "json"},
}

// flagValues returns the words that flag f takes, or nil when it takes
// anything (a file name, an address).
func flagValues(f cli.Flag) []string {
	if g, ok := f.(*cli.GenericFlag); ok {
		if cv, ok := g.Value.(*choiceValue); ok {
			return cv.choices
		}
	}
	return namedValues[f.Names()[0]]
}

// takesFile reports whether f's value is a file name: a path flag, or one
// whose placeholder says FILE.
func takesFile(f cli.Flag) bool {
	if _, ok := f.(*cli.PathFlag); ok {
		return true
	}
	u, ok := f.(interface{ GetUsage() string })
	return ok && strings.Contains(u.GetUsage(), "`FILE`")
}

// fishCompletion is urfave/cli's fish script, with file names completed
// for the flags that take a file (it completes none unless a flag says
// TakesFile) and the values of the flags that take one of a few words.
func fishCompletion(app *cli.App) (string, error) {
	var extra strings.Builder
	var walk func(path []string, flags []cli.Flag, cmds []*cli.Command)
	walk = func(path []string, flags []cli.Flag, cmds []*cli.Command) {
		for _, f := range flags {
			switch pf := f.(type) {
			case *cli.PathFlag:
				pf.TakesFile = true
			case *cli.StringFlag:
				pf.TakesFile = pf.TakesFile || takesFile(f)
			case *cli.GenericFlag:
				pf.TakesFile = pf.TakesFile || takesFile(f)
			}
			vals := flagValues(f)
			if len(vals) == 0 {
				continue
			}
			cond := "__fish_vipmux_no_subcommand"
			if len(path) > 0 {
				cond = "__fish_seen_subcommand_from " + path[len(path)-1]
			}
			fmt.Fprintf(&extra, "complete -c %s -n '%s' -l %s -x -a '%s'\n", app.Name, cond, f.Names()[0], strings.Join(vals, " "))
		}
		for _, c := range cmds {
			walk(append(path, c.Name), c.Flags, c.Subcommands)
		}
	}
	walk(nil, app.Flags, app.Commands)
	s, err := app.ToFishCompletion()
	if err != nil {
		return "", err
	}
	return s + "\n# Values of the flags that take one of a few words.\n" + extra.String(), nil
}

// completeFlags is the completion of a command without subcommands: after
// a flag that takes one of a few words, those words; after another flag
// that takes a value, nothing (the shell completes file names); after a
// partial flag, the flags that it begins; otherwise every flag.
// Like urfave/cli's DefaultCompleteWithFlags it reads the word before
// --generate-bash-completion from os.Args, which the app never sees.
func completeFlags(cmd *cli.Command) cli.BashCompleteFunc {
	return func(c *cli.Context) {
		last := ""
		if len(os.Args) > 2 {
			last = os.Args[len(os.Args)-2]
		}
		for _, f := range cmd.VisibleFlags() {
			if vf, ok := f.(cli.DocGenerationFlag); ok && vf.TakesValue() {
				for _, n := range f.Names() {
					if last == flagName(n) {
						for _, v := range flagValues(f) {
							fmt.Fprintln(c.App.Writer, v)
						}
						return
					}
				}
			}
		}
		partial := strings.HasPrefix(last, "-")
		for _, f := range cmd.VisibleFlags() {
			for _, n := range f.Names() {
				n = flagName(n)
				if len(n) > 2 && (!partial || strings.HasPrefix(n, last)) { // long names only
					fmt.Fprintln(c.App.Writer, n)
				}
			}
		}
	}
}

// flagName is a flag's name as typed: -c, --config.
func flagName(n string) string {
	if len(n) == 1 {
		return "-" + n
	}
	return "--" + n
}
