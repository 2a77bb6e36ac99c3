package command

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/urfave/cli/v2"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/dlq"
)

var lookupEnv = os.Getenv

// filterFlags select dead letters.
func filterFlags(defaultLimit int) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "channel", Aliases: []string{"c"}, Usage: "original channel (without the namespace)"},
		&cli.StringFlag{Name: "since", Usage: "dead-lettered at or after: RFC 3339 time, date (2006-01-02, midnight local time) or age (2h, 30m, 7d); dead letters with no time never match"},
		&cli.StringFlag{Name: "error-contains", Aliases: []string{"e"}, Usage: "error message or name contains (case-insensitive)"},
		&cli.IntFlag{Name: "limit", Value: defaultLimit, Usage: "at most this many dead letters (0: all)"},
	}
}

// dlqSelection reads the filter flags and IDs, the global flags and the
// dead-letter queue they name.
func dlqSelection(c *cli.Context) (dlq.Filter, globals, string, error) {
	f, err := filterOf(c)
	if err != nil {
		return f, globals{}, "", err
	}
	g := globalsOf(c)
	q, err := g.dlqName()
	return f, g, q, err
}

// filterOf reads the filter flags and the IDs given as arguments.
func filterOf(c *cli.Context) (dlq.Filter, error) {
	if err := noFlagsAfterArgs(c); err != nil {
		return dlq.Filter{}, err
	}
	g := globalsOf(c)
	f := dlq.Filter{ErrorContains: c.String("error-contains"), Limit: c.Int("limit"), IDs: c.Args().Slice()}
	if f.Limit < 0 {
		return f, usagef("--limit %d: must be 0 or more", f.Limit)
	}
	if ch := c.String("channel"); ch != "" {
		full, err := g.name("--channel", ch)
		if err != nil {
			return f, err
		}
		f.Channel = full
	}
	if s := c.String("since"); s != "" {
		t, err := parseSince(s, time.Now())
		if err != nil {
			return f, err
		}
		f.Since = t
	}
	return f, nil
}

// parseSince reads an RFC 3339 time, a date (midnight, local time) or an
// age (a Go duration, or whole days: 7d).
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 && days <= 100000 {
			return now.AddDate(0, 0, -days), nil
		}
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02", s, time.Local); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("--since %q: want an RFC 3339 time (2006-01-02T15:04:05Z), a date (2006-01-02, local time) or an age (2h, 7d)", s)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// clean makes untrusted text safe for a terminal: control and other
// non-printable characters are escaped, and it is cut to max bytes
// (0: no cut).
func clean(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsPrint(r) || r == ' ' {
			b.WriteRune(r)
		} else {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		if max > 0 && b.Len() >= max {
			return b.String() + "…"
		}
	}
	return b.String()
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func attemptsText(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:  "ls",
		Usage: "list channels with their groups and backlogs",
		UsageText: `channels ls

Example:
   channels --namespace shop ls`,
		Description:  "Lists the channels of --namespace (every channel without one): messages stored (-1: stored per group), and per group the lag (not yet delivered) and pending (delivered, not acknowledged).",
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("ls takes no arguments")
			}
			return withAdapter(c, false, func(ctx context.Context, a broker.Adapter) error {
				cs, err := dlq.Channels(ctx, a, globalsOf(c).namespace)
				if err != nil {
					return err
				}
				if globalsOf(c).json {
					if cs == nil {
						cs = []broker.ChannelInfo{}
					}
					return printJSON(c.App.Writer, cs)
				}
				t := table(c.App.Writer)
				fmt.Fprintln(t, "CHANNEL\tMESSAGES\tGROUP\tLAG\tPENDING")
				for _, ch := range cs {
					if len(ch.Groups) == 0 {
						fmt.Fprintf(t, "%s\t%d\t-\t-\t-\n", clean(ch.Name, 0), ch.Messages)
					}
					for _, g := range ch.Groups {
						fmt.Fprintf(t, "%s\t%d\t%s\t%d\t%d\n", clean(ch.Name, 0), ch.Messages, clean(g.Name, 0), g.Lag, g.Pending)
					}
				}
				return t.Flush()
			})
		},
	}
}

func dlqLsCommand() *cli.Command {
	return &cli.Command{
		Name:  "ls",
		Usage: "list dead letters",
		UsageText: `channels dlq ls [--channel C] [--since T] [--error-contains S] [--limit N]

Example:
   channels dlq ls --channel order.created --since 2h --error-contains timeout`,
		Description:  "Lists the dead letters of the queue, oldest first, without taking them: id, original channel and group, error name and message, attempts and time.",
		Flags:        filterFlags(100),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("dlq ls takes no arguments (dlq show ID shows one dead letter)")
			}
			f, g, q, err := dlqSelection(c)
			if err != nil {
				return err
			}
			return withAdapter(c, false, func(ctx context.Context, a broker.Adapter) error {
				es, err := dlq.List(ctx, a, q, f)
				if err != nil {
					return err
				}
				warnUntimed(ctx, c, a, q, f)
				if f.Limit > 0 && len(es) == f.Limit {
					// On standard error, with --json too: the list may be cut.
					defer fmt.Fprintf(c.App.ErrWriter, "showing the first %d; --limit 0 for all\n", f.Limit)
				}
				if g.json {
					if es == nil {
						es = []dlq.Entry{}
					}
					return printJSON(c.App.Writer, es)
				}
				t := table(c.App.Writer)
				fmt.Fprintln(t, "ID\tCHANNEL\tGROUP\tERROR\tMESSAGE\tATTEMPTS\tTIME")
				for _, e := range es {
					name, msg := e.ErrorName, e.ErrorMessage
					if e.DecodeError != "" {
						// The failure is unknown: say why instead.
						name, msg = "(unreadable)", e.DecodeError
					}
					fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", clean(e.ID, 0), orDash(clean(e.OriginalChannel, 0)),
						orDash(clean(e.OriginalGroup, 0)), orDash(clean(name, 40)), orDash(clean(msg, 60)),
						attemptsText(e.Attempts), timeText(e.Time))
				}
				return t.Flush()
			})
		},
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func dlqShowCommand() *cli.Command {
	return &cli.Command{
		Name:  "show",
		Usage: "show one dead letter: headers and decoded payload",
		UsageText: `channels dlq show ID

Example:
   channels dlq show 1712345678901-0`,
		Description:  "Shows the dead letter ID: its headers, and its payload as indented JSON, decoded MessagePack, quoted text or a hex dump (the first 64 KiB).",
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("dlq show takes one ID")
			}
			g := globalsOf(c)
			q, err := g.dlqName()
			if err != nil {
				return err
			}
			return withAdapter(c, false, func(ctx context.Context, a broker.Adapter) error {
				e, err := dlq.Get(ctx, a, q, c.Args().First())
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(c.App.Writer, e)
				}
				w := c.App.Writer
				t := table(w)
				fmt.Fprintf(t, "id:\t%s\n", clean(e.ID, 0))
				fmt.Fprintf(t, "queue:\t%s\n", q)
				fmt.Fprintf(t, "channel:\t%s\n", orDash(clean(e.OriginalChannel, 0)))
				fmt.Fprintf(t, "group:\t%s\n", orDash(clean(e.OriginalGroup, 0)))
				fmt.Fprintf(t, "error:\t%s\n", orDash(clean(strings.TrimPrefix(e.ErrorName+": "+e.ErrorMessage, ": "), 0)))
				fmt.Fprintf(t, "attempts:\t%s\n", attemptsText(e.Attempts))
				fmt.Fprintf(t, "time:\t%s\n", timeText(e.Time))
				if e.Key != nil {
					fmt.Fprintf(t, "key:\t%s\n", clean(string(e.Key), 4096))
				}
				if e.DecodeError != "" {
					fmt.Fprintf(t, "unreadable:\t%s (replay and move refuse it without --force)\n", clean(e.DecodeError, 0))
				}
				if err := t.Flush(); err != nil {
					return err
				}
				fmt.Fprintln(w, "headers:")
				keys := make([]string, 0, len(e.Headers))
				for k := range e.Headers {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				t = table(w)
				for _, k := range keys {
					fmt.Fprintf(t, "  %s:\t%s\n", clean(k, 0), clean(e.Headers[k], 4096))
				}
				if err := t.Flush(); err != nil {
					return err
				}
				format, text := dlq.FormatPayload(e.Payload, 0)
				fmt.Fprintf(w, "payload (%s, %d bytes):\n%s\n", format, len(e.Payload), cleanLines(text))
				return nil
			})
		},
	}
}

// warnUntimed says on standard error how many dead letters --since left
// out because their time is unknown.
func warnUntimed(ctx context.Context, c *cli.Context, a broker.Adapter, q string, f dlq.Filter) {
	if n, err := dlq.Untimed(ctx, a, q, f); err == nil && n > 0 {
		fmt.Fprintf(c.App.ErrWriter, "%d dead letters with no time left out by --since\n", n)
	}
}

// cleanLines is clean for text of several lines.
func cleanLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = clean(l, 0)
	}
	return strings.Join(lines, "\n")
}

func dlqPurgeCommand() *cli.Command {
	return &cli.Command{
		Name:  "purge",
		Usage: "remove dead letters",
		UsageText: `channels dlq purge [filters] (--yes | --dry-run) [ID...]

Example:
   channels dlq purge --channel order.created --since 2026-01-01 --yes`,
		Description: "Removes the matching dead letters (the IDs given, and/or the filters; all of them without any). Refuses to run without --yes; --dry-run lists what would be removed.",
		Flags: append(filterFlags(0),
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "confirm the removal"},
			&cli.BoolFlag{Name: "dry-run", Usage: "list what would be removed; remove nothing"},
		),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			f, err := filterOf(c)
			if err != nil {
				return err
			}
			dry := c.Bool("dry-run")
			if !c.Bool("yes") && !dry {
				return usagef("dlq purge removes dead letters for good: add --yes (see what matches with --dry-run)")
			}
			g := globalsOf(c)
			q, err := g.dlqName()
			if err != nil {
				return err
			}
			if dry {
				return withAdapter(c, true, func(ctx context.Context, a broker.Adapter) error {
					es, err := dlq.List(ctx, a, q, f)
					if err != nil {
						return err
					}
					warnUntimed(ctx, c, a, q, f)
					err = missingIDs(q, f, es)
					if g.json {
						if es == nil {
							es = []dlq.Entry{}
						}
						if perr := printJSON(c.App.Writer, map[string]any{"queue": q, "dryRun": true, "matched": len(es), "removed": 0, "entries": es}); perr != nil && err == nil {
							err = perr
						}
						return err
					}
					t := table(c.App.Writer)
					fmt.Fprintln(t, "ID\tCHANNEL\tERROR\tMESSAGE")
					for _, e := range es {
						fmt.Fprintf(t, "%s\t%s\t%s\t%s\n", clean(e.ID, 0), orDash(clean(e.OriginalChannel, 0)), orDash(clean(e.ErrorName, 40)), orDash(clean(e.ErrorMessage, 60)))
					}
					if ferr := t.Flush(); ferr != nil && err == nil {
						err = ferr
					}
					fmt.Fprintf(c.App.Writer, "dry run: %d dead letters of %s would be removed\n", len(es), q)
					return err
				})
			}
			return withAdapter(c, true, func(ctx context.Context, a broker.Adapter) error {
				warnUntimed(ctx, c, a, q, f)
				n, err := dlq.Purge(ctx, a, q, f)
				if g.json {
					if perr := printJSON(c.App.Writer, map[string]any{"queue": q, "removed": n}); perr != nil && err == nil {
						err = perr
					}
					return err
				}
				fmt.Fprintf(c.App.Writer, "removed %d dead letters of %s\n", n, q)
				return err
			})
		},
	}
}

// missingIDs is the error (broker.ErrNotFound) of the IDs of f not among
// es, as purge reports them.
func missingIDs(q string, f dlq.Filter, es []dlq.Entry) error {
	if len(f.IDs) == 0 || (f.Limit > 0 && len(es) >= f.Limit) {
		return nil
	}
	found := map[string]bool{}
	for _, e := range es {
		found[e.ID] = true
	}
	var missing []string
	for _, id := range f.IDs {
		if !found[id] {
			found[id] = true
			missing = append(missing, strconv.Quote(id))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: dead letters not in %s (or not matching the filter): %s", broker.ErrNotFound, q, strings.Join(missing, ", "))
}
