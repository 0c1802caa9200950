package main

import (
	"fmt"
	"io"
	"regexp"
	"strings"
)

// exampleKey matches a key line of config.example.toml: "key = value",
// or "# key = value" for an optional key shown at its default (the
// comment above it says which).
var exampleKey = regexp.MustCompile(`^(# )?([a-z_]+) = (.+)$`)

// exampleSection matches a section line: "[nic]", "[health.port.8080]".
var exampleSection = regexp.MustCompile(`^#? ?\[([a-z_.0-9]+)\]$`)

// confSection is one [section] of the example: its text, and its keys.
type confSection struct {
	name, doc string
	keys      []confKey
}

// confKey is one key of the example, with the comment above it.
type confKey struct {
	name, value, doc string
}

// parseExample splits config.example.toml into its opening comment and its
// sections. A comment block belongs to the key or section line right
// below it (and to the key lines right after that one); a comment block between a section line and its first key
// (with a blank line after it) is the section's too.
func parseExample(text string) (header string, sections []confSection) {
	var block []string
	var cur *confSection
	flush := func() string {
		s := strings.Join(block, "\n")
		block = nil
		return s
	}
	prevKey := false
	for _, line := range strings.Split(text, "\n") {
		isKey := exampleKey.MatchString(line) && cur != nil
		switch {
		case line == "":
			if cur == nil && header == "" {
				header = flush()
			} else if cur != nil && len(block) > 0 && len(cur.keys) == 0 {
				cur.doc += "\n\n" + flush()
			} else {
				block = append(block, "")
			}
		case exampleSection.MatchString(line):
			sections = append(sections, confSection{name: exampleSection.FindStringSubmatch(line)[1], doc: strings.TrimSpace(flush())})
			cur = &sections[len(sections)-1]
		case exampleKey.MatchString(line) && cur != nil:
			m := exampleKey.FindStringSubmatch(line)
			doc := strings.TrimSpace(flush())
			if doc == "" && prevKey && len(cur.keys) > 0 {
				// Keys on consecutive lines share the comment above
				// the first ("Optional, together.").
				doc = cur.keys[len(cur.keys)-1].doc
			}
			cur.keys = append(cur.keys, confKey{name: m[2], value: m[3], doc: doc})
		case strings.HasPrefix(line, "#"):
			block = append(block, strings.TrimPrefix(strings.TrimPrefix(line, "#"), " "))
		}
		prevKey = isKey
	}
	return header, sections
}

// writeConfMan writes vipmux.toml(5) in roff from the example config: its
// opening comment is the DESCRIPTION, each section a subsection with one
// tagged paragraph per key (the key as the example writes it, then its
// comment).
func writeConfMan(w io.Writer, version, example string) error {
	header, sections := parseExample(example)
	var b strings.Builder
	fmt.Fprintf(&b, ".TH VIPMUX.TOML 5 \"\" \"vipmux %s\" \"File Formats\"\n", roffEscape(version))
	b.WriteString(".SH NAME\nvipmux.toml \\- configuration file of vipmux(8)\n")
	b.WriteString(".SH SYNOPSIS\n/etc/vipmux/vipmux.toml\n")
	b.WriteString(".SH DESCRIPTION\n")
	writeManText(&b, header)
	b.WriteString(".PP\nThe example this page is made from is installed as share/doc/vipmux/config.example.toml.\n")
	b.WriteString(".SH SECTIONS\n")
	for _, s := range sections {
		fmt.Fprintf(&b, ".SS \"[%s]\"\n", roffEscape(s.name))
		writeManText(&b, s.doc)
		for _, k := range s.keys {
			// The tag is bold; roff would take its quotes for argument
			// quoting, hence \(dq.
			fmt.Fprintf(&b, ".TP\n\\fB%s = %s\\fR\n", roffEscape(k.name), strings.ReplaceAll(roffEscape(k.value), `"`, `\(dq`))
			// Paragraphs inside the tagged paragraph keep its indent.
			var doc strings.Builder
			writeManText(&doc, k.doc)
			b.WriteString(strings.ReplaceAll(strings.TrimPrefix(doc.String(), ".PP\n"), ".PP\n", ".IP\n"))
		}
	}
	b.WriteString(".SH SEE ALSO\n.BR vipmux (8)\n")
	_, err := io.WriteString(w, b.String())
	return err
}
