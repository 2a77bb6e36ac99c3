// Package command is the channels command (cmd/channels) as a package:
// Run runs one command line in-process exactly as the binary does (same
// flags, output and exit codes), so that tests drive the command against
// real brokers without building it. The command's documentation is that
// of cmd/channels.
package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/dlq"

	// Every adapter of the module, so that any adapter URL resolves.
	_ "github.com/microchannels/channels/amqp"
	_ "github.com/microchannels/channels/jetstream"
	_ "github.com/microchannels/channels/kafka"
	_ "github.com/microchannels/channels/memory"
	_ "github.com/microchannels/channels/redis"
)

// Exit codes (see the documentation of cmd/channels).
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitUnsupported = 3
	exitNotFound    = 4
)

// usageError is a mistake on the command line (err, when set, is the
// error it comes from).
type usageError struct {
	msg string
	err error
}

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCode maps an error to the exit code of the command.
func exitCode(err error) int {
	var ue *usageError
	var se *dlq.SendError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, broker.ErrUnsupported):
		return exitUnsupported
	case errors.As(err, &se):
		// A refused send, whatever the adapter's reason: its ErrNotFound
		// (no queue keeps the copy) is not a dead letter not found.
		return exitFailed
	case errors.Is(err, broker.ErrNotFound):
		return exitNotFound
	}
	// An ErrInvalidOption at this point came from the broker while the
	// command ran (the command line was read and the adapter connected).
	return exitFailed
}

// errorKind names the error on standard error.
func errorKind(code int) string {
	switch code {
	case exitUsage:
		return "usage error"
	case exitUnsupported:
		return "unsupported"
	case exitNotFound:
		return "not found"
	}
	return "error"
}

// Run runs the command line args (args[0] is the program name), writing
// its output to stdout and its errors and progress to stderr, and returns
// the exit code. ctx ends a running command (tail, a long replay) as an
// interrupt does.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var notFound error
	app := newApp(stdout, stderr)
	app.CommandNotFound = func(c *cli.Context, name string) {
		notFound = usagef("unknown command %q; see %s --help", name, strings.TrimSpace(c.Command.HelpName))
	}
	err := app.RunContext(ctx, args)
	if err == nil {
		err = notFound
	}
	code := exitCode(err)
	if err != nil {
		var raw []string
		for i, a := range args {
			// The adapter URL may be given as --adapter=URL or --adapter URL.
			if v, ok := cutAnyPrefix(a, "--adapter=", "-adapter=", "-a=", "--a="); ok {
				raw = append(raw, v)
			} else if (a == "--adapter" || a == "-adapter" || a == "-a" || a == "--a") && i+1 < len(args) {
				raw = append(raw, args[i+1])
			}
		}
		msg := strings.TrimPrefix(err.Error(), "channels: ")
		// Error text carries what the broker and the dead letters said:
		// untrusted, escaped like any other output.
		fmt.Fprintf(stderr, "channels: %s: %s\n", errorKind(code), clean(broker.Redact(msg, append(raw, envAdapter())...), 0))
	}
	return code
}

// cutAnyPrefix is strings.CutPrefix with the first of prefixes s has.
func cutAnyPrefix(s string, prefixes ...string) (string, bool) {
	for _, p := range prefixes {
		if v, ok := strings.CutPrefix(s, p); ok {
			return v, true
		}
	}
	return s, false
}

// globals are the global flags, read once per run.
type globals struct {
	adapter    string
	namespace  string
	queue      string
	json       bool
	timeout    time.Duration
	serializer string
}

func globalsOf(c *cli.Context) globals {
	return globals{adapter: c.String("adapter"), namespace: c.String("namespace"), queue: c.String("queue"),
		json: c.Bool("json"), timeout: c.Duration("timeout"), serializer: c.String("serializer")}
}

// name is the full name of a channel given on the command line: the
// namespace is added, unless n already starts with it (a full name pasted
// from the output of ls or dlq ls).
func (g globals) name(what, n string) (string, error) {
	ns := g.namespace
	if ns != "" && strings.HasPrefix(n, ns+".") {
		ns = ""
	}
	full, err := channels.QualifiedName(ns, n)
	if err != nil {
		return "", usagef("%s: %v", what, err)
	}
	return full, nil
}

// dlqName is the full name of the dead-letter queue.
func (g globals) dlqName() (string, error) {
	q, err := dlq.QueueName(g.namespace, g.queue)
	if err != nil {
		return "", usagef("--queue: %v", err)
	}
	return q, nil
}

// withAdapter connects to the broker, runs fn and closes the adapter. The
// whole of it is bounded by --timeout unless follow is set (tail, and the
// operations that take as long as the queue is big: replay, move, purge),
// where only the connection is.
func withAdapter(c *cli.Context, follow bool, fn func(ctx context.Context, a broker.Adapter) error) error {
	g := globalsOf(c)
	if g.adapter == "" {
		return usagef("no adapter: give --adapter URL or set CHANNELS_ADAPTER")
	}
	ser, err := broker.SerializerByName(g.serializer)
	if err != nil {
		return usagef("--serializer: %v", err)
	}
	a, err := broker.Resolve(g.adapter)
	if err != nil {
		// An unknown scheme or a bad option of the URL: the command line.
		return &usageError{msg: err.Error(), err: err}
	}
	ctx := c.Context
	if g.timeout > 0 && !follow {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	cctx := ctx
	if g.timeout > 0 && follow {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	if err := a.Connect(cctx, broker.Env{NodeID: "channels-cli", Serializer: ser}); err != nil {
		err = fmt.Errorf("connect to %s: %w", a.Name(), err)
		if errors.Is(err, broker.ErrInvalidOption) {
			// The adapter refused its configuration: the URL's options.
			return &usageError{msg: err.Error(), err: err}
		}
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Close(closeCtx)
	}()
	return fn(ctx, a)
}

// noFlagsAfterArgs refuses a flag given after an argument, which the
// parser would take for an argument.
func noFlagsAfterArgs(c *cli.Context) error {
	for _, a := range c.Args().Slice() {
		if strings.HasPrefix(a, "-") && a != "-" {
			return usagef("flag %s after an argument: flags go before arguments (%s --help)", a, c.Command.HelpName)
		}
	}
	return nil
}

func onUsageError(_ *cli.Context, err error, _ bool) error { return &usageError{msg: err.Error()} }

// newApp builds the command.
func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "channels",
		Usage: "operate dead letters and channels of the channels plugin",
		UsageText: `channels [global flags] command [flags] [arguments]

Example:
   CHANNELS_ADAPTER=redis://localhost:6379 channels dlq ls --since 1h`,
		Description: `Exit codes: 0 ok, 1 operation error, 2 usage error, 3 unsupported by this adapter, 4 not found.
Channel names (CHANNEL, --channel, --to, --queue) are given without the namespace: the command adds --namespace (CHANNEL, --channel and --to may also be given full, starting with the namespace and a dot, as ls and dlq ls print them).`,
		Writer:         stdout,
		ErrWriter:      stderr,
		OnUsageError:   onUsageError,
		ExitErrHandler: func(*cli.Context, error) {},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "adapter", Aliases: []string{"a"}, EnvVars: []string{"CHANNELS_ADAPTER"},
				Usage: "adapter URL: redis://host:6379, amqp://user:pass@host:5672, nats://host:4222, kafka://host:9092, memory://"},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, EnvVars: []string{"CHANNELS_NAMESPACE"},
				Usage: "namespace of the plugin (prefix of every name)"},
			&cli.StringFlag{Name: "queue", Aliases: []string{"q"}, Value: dlq.DefaultQueue, EnvVars: []string{"CHANNELS_DLQ"},
				Usage: "dead-letter queue, without the namespace"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of tables"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second,
				Usage: "bound of each command (tail, dlq replay, move and purge: of the connection only); 0 for none"},
			&cli.StringFlag{Name: "serializer", Value: "JSON", EnvVars: []string{"CHANNELS_SERIALIZER"},
				Usage: "the plugin's serializer (JSON or MsgPack), for adapters that encode headers with it (Redis)"},
		},
		Commands: []*cli.Command{
			lsCommand(),
			{
				Name:  "dlq",
				Usage: "list, show, replay, move and purge dead letters",
				UsageText: `channels dlq command [flags] [arguments]

Example:
   channels dlq ls --channel order.created`,
				Description:  "Works on the dead-letter queue --queue (default FAILED_MESSAGES) of --namespace.",
				OnUsageError: onUsageError,
				Subcommands: []*cli.Command{
					dlqLsCommand(), dlqShowCommand(), dlqReplayCommand(), dlqPurgeCommand(), dlqMoveCommand(),
				},
			},
			rmMessageCommand(),
			tailCommand(),
		},
	}
	return app
}

// envAdapter is CHANNELS_ADAPTER, for redaction.
func envAdapter() string { return lookupEnv("CHANNELS_ADAPTER") }
