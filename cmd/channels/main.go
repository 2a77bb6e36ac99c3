// Command channels operates what a broker holds for the channels plugin:
// dead letters (list, show, replay, move, purge), channels and their
// groups' backlogs, a live view of a channel and the removal of one
// message. It is a thin layer over package dlq.
//
//	go install github.com/microchannels/channels/cmd/channels@latest
//
//	export CHANNELS_ADAPTER=redis://localhost:6379
//	channels ls
//	channels dlq ls --channel order.created --since 2h
//	channels dlq show 1712345678901-0
//	channels dlq replay --error-contains timeout --dry-run
//	channels dlq purge --channel order.created --yes
//	channels tail order.created
//
// The adapter is given as a URL (--adapter or CHANNELS_ADAPTER), as the
// plugin resolves it: redis://, rediss://, amqp://, nats://, kafka://,
// memory://... (every adapter package of the module is linked in). Channel
// names on the command line (CHANNEL arguments, --channel, --to) and the
// dead-letter queue (--queue, default FAILED_MESSAGES) are names as
// declared: the command adds the namespace (--namespace or
// CHANNELS_NAMESPACE). --serializer (JSON by default) must match the
// plugin's where the adapter encodes headers with it (Redis).
//
// Flags go before arguments ("channels dlq replay --to other 12 13"); a
// flag after an argument is a usage error.
//
// Output is a table, or JSON with --json. Errors and progress go to
// standard error; credentials of the adapter URL are never printed.
//
// Exit codes:
//
//	0  success
//	1  the operation failed (broker unreachable, a send refused, whatever
//	   the broker's reason, an option the broker refused while it ran, ...)
//	2  usage error (unknown command or flag, bad argument, purge without
//	   --yes, an adapter URL the adapter refuses)
//	3  the adapter does not support the operation (broker.ErrUnsupported)
//	4  not found: no such dead letter (show) or message (rm-message), or
//	   IDs given to replay, move or purge that are not in the queue (the
//	   others are handled)
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/microchannels/channels/cmd/channels/command"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := command.Run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
