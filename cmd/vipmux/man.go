package main

import (
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux"
)

func manCommand() *cli.Command {
	return &cli.Command{
		Name:  "man",
		Usage: "print a manual page in roff: vipmux(8), or vipmux.toml(5) with --section 5",
		Description: `Prints the manual page made from the same text as --help: every command
with its description, examples and flags, and the files, environment and
exit status. With --section 5 it prints vipmux.toml(5), the configuration
file's page, made from the example config (config.example.toml) that
documents every key. make install installs them as man8/vipmux.8 and
man5/vipmux.toml.5.

Examples:
   vipmux man | man -l -
   vipmux man --section 5 | man -l -
   vipmux man > /usr/local/share/man/man8/vipmux.8`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "section", Value: 8, Usage: "`N`: 8 for the commands, 5 for the configuration file"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("unexpected argument %q", c.Args().First())
			}
			switch c.Int("section") {
			case 8:
				return writeMan(c.App.Writer, c.App)
			case 5:
				return writeConfMan(c.App.Writer, c.App.Version, vipmux.ExampleConfig)
			}
			return fmt.Errorf("--section %d: want 8 (vipmux) or 5 (vipmux.toml)", c.Int("section"))
		},
	}
}

// heading matches a line of a help text that starts a section: "Examples:".
var heading = regexp.MustCompile(`^[A-Z][A-Za-z ]*:$`)

// writeMan writes app's manual page (section 8) in roff (man(7) macros):
// NAME, SYNOPSIS, DESCRIPTION from the app's help, GLOBAL OPTIONS, then one
// subsection per visible command with its usage, description and flags.
func writeMan(w io.Writer, app *cli.App) error {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH VIPMUX 8 \"\" \"vipmux %s\" \"System Administration\"\n", roffEscape(app.Version))
	fmt.Fprintf(&b, ".SH NAME\nvipmux \\- %s\n", roffEscape(app.Usage))
	b.WriteString(".SH SYNOPSIS\n")
	for _, cmd := range app.VisibleCommands() {
		fmt.Fprintf(&b, ".B vipmux %s\n[\\fIoptions\\fR]", cmd.Name)
		if cmd.ArgsUsage != "" {
			fmt.Fprintf(&b, " %s", roffEscape(cmd.ArgsUsage))
		}
		b.WriteString("\n.br\n")
	}
	// The app's description up to its first heading is DESCRIPTION; each
	// heading after it ("Examples:", "Files:") is a section of its own,
	// after COMMANDS.
	desc, sections := splitSections(app.Description)
	b.WriteString(".SH DESCRIPTION\n")
	writeManText(&b, desc)
	if flags := app.VisibleFlags(); len(flags) > 0 {
		b.WriteString(".SH GLOBAL OPTIONS\n")
		b.WriteString("Given before the command; the client commands take them after it as well.\n")
		writeManFlags(&b, flags)
	}
	b.WriteString(".SH COMMANDS\n")
	for _, cmd := range app.VisibleCommands() {
		fmt.Fprintf(&b, ".SS \"vipmux %s\"\n", cmd.Name)
		fmt.Fprintf(&b, "%s.\n", roffEscape(strings.TrimSuffix(cmd.Usage, ".")))
		writeManText(&b, cmd.Description)
		if flags := cmd.VisibleFlags(); len(flags) > 0 {
			b.WriteString(".PP\nOptions:\n")
			writeManFlags(&b, flags)
		}
	}
	for _, sec := range sections {
		fmt.Fprintf(&b, ".SH %s\n", roffEscape(strings.ToUpper(strings.TrimSuffix(sec.title, ":"))))
		writeManText(&b, sec.text)
	}
	fmt.Fprintf(&b, ".SH SEE ALSO\n.BR vipmux.toml (5),\n.BR systemctl (1),\n.BR setpriv (1),\n.BR capabilities (7)\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// writeManFlags writes one tagged paragraph per flag: its names with the
// placeholder, in bold, then its usage.
func writeManFlags(b *strings.Builder, flags []cli.Flag) {
	for _, f := range flags {
		names, usage, _ := strings.Cut(cli.FlagStringer(f), "\t")
		fmt.Fprintf(b, ".TP\n.B %s\n%s\n", roffEscape(names), roffEscape(usage))
	}
}

// section is a part of a help text under a heading line.
type section struct{ title, text string }

// splitSections splits text at its heading lines: the text before the
// first, and each heading with the text under it.
func splitSections(text string) (before string, sections []section) {
	lines := strings.Split(text, "\n")
	var cur *section
	var head []string
	for _, line := range lines {
		if heading.MatchString(line) {
			sections = append(sections, section{title: line})
			cur = &sections[len(sections)-1]
			continue
		}
		if cur == nil {
			head = append(head, line)
		} else {
			cur.text += line + "\n"
		}
	}
	return strings.Join(head, "\n"), sections
}

// writeManText renders a help text: blank lines separate paragraphs, a
// line like "Examples:" is a bold heading, and indented lines (examples)
// are kept as they are, in an example block.
func writeManText(b *strings.Builder, text string) {
	inExample := false
	endExample := func() {
		if inExample {
			b.WriteString(".EE\n.RE\n")
			inExample = false
		}
	}
	para := true
	for _, line := range strings.Split(strings.Trim(text, "\n"), "\n") {
		switch {
		case strings.TrimSpace(line) == "":
			endExample()
			para = true
		case strings.HasPrefix(line, " "):
			if !inExample {
				b.WriteString(".RS 4\n.EX\n")
				inExample = true
			}
			b.WriteString(roffEscape(strings.TrimSpace(line)) + "\n")
		case heading.MatchString(line):
			endExample()
			fmt.Fprintf(b, ".PP\n.B %s\n.br\n", roffEscape(line))
			para = false
		default:
			endExample()
			if para {
				b.WriteString(".PP\n")
				para = false
			}
			b.WriteString(roffEscape(line) + "\n")
		}
	}
	endExample()
}

// roffEscape makes s safe as roff text: backslashes and minus signs are
// escaped, and a line may not start with a control character.
func roffEscape(s string) string {
	s = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
