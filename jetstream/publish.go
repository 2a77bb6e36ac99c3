package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/microchannels/channels/kit"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
)

// Publish stores the message in the channel's stream and returns once
// JetStream acknowledged it. A channel without a stream gets one (with the
// adapter's stream options), so sending before any group subscribed works,
// except for a send with broker.PublishOptions.Routed: no stream stores its
// subject, and it fails with an error wrapping broker.ErrPublish and
// broker.ErrNotFound.
func (a *Adapter) Publish(ctx context.Context, channel string, out *broker.Outgoing) error {
	c, err := a.life.Current()
	if err != nil {
		return err
	}
	m, popts, err := prepareMsg(channel, out)
	if err != nil {
		return err
	}
	return a.publishEnsuring(ctx, c, channel, m, popts, out.Options.Routed)
}

// prepareMsg checks the send options of out and builds its NATS message and
// publish options.
func prepareMsg(channel string, out *broker.Outgoing) (*nats.Msg, []js.PublishOpt, error) {
	if err := kit.CheckOptions("jetstream", out.Options.AdapterOptions, isSendOption); err != nil {
		return nil, nil, err
	}
	m := nats.NewMsg(channel)
	m.Data = out.Payload
	if err := setHeaders(m.Header, out.Headers, len(out.Payload) == 0); err != nil {
		return nil, nil, &broker.PublishError{Channel: channel, Err: err}
	}
	var popts []js.PublishOpt
	if so, ok := sendOptions(out.Options.AdapterOptions); ok {
		if so.MsgID != "" {
			popts = append(popts, js.WithMsgID(so.MsgID))
		}
		if so.ExpectLastSequence != 0 {
			popts = append(popts, js.WithExpectLastSequence(so.ExpectLastSequence))
		}
		if so.ExpectLastMsgID != "" {
			popts = append(popts, js.WithExpectLastMsgID(so.ExpectLastMsgID))
		}
		if so.ExpectStream != "" {
			popts = append(popts, js.WithExpectStream(so.ExpectStream))
		}
	}
	return m, popts, nil
}

// publishEnsuring publishes m and waits for its acknowledgement. A send
// that finds no stream (JetStream's "no response from stream": never seen
// by this adapter, or removed since by anyone) creates the stream when
// createMissingStream may, and is sent once more, unless it is routed: it
// then fails with an error wrapping broker.ErrNotFound.
func (a *Adapter) publishEnsuring(ctx context.Context, c *conn, channel string, m *nats.Msg, popts []js.PublishOpt, routed bool) error {
	v, known := a.streams.Load(channel)
	if !known {
		// No stream seen yet: learn at once that there is none (instead of
		// nats.go's retries on no responders) and create it.
		popts = append(popts[:len(popts):len(popts)], js.WithRetryAttempts(0))
	}
	ack, err := a.publish(ctx, c, m, popts)
	if errors.Is(err, js.ErrNoStreamResponse) && c.nc.IsConnected() && !routed {
		seen, _ := v.(string)
		if a.createMissingStream(ctx, c, channel, seen) {
			ack, err = a.publish(ctx, c, m, popts)
		}
	}
	if err == nil {
		a.streams.Store(channel, ack.Stream)
		a.answered()
		return nil
	}
	if isUnanswered(err) {
		a.unanswered(c.nc, a.life.Env.Logger)
	}
	return &broker.PublishError{Channel: channel, Err: unrouted(err, routed)}
}

// unrouted marks err as broker.ErrNotFound when the send is routed and no
// stream answered for its subject.
func unrouted(err error, routed bool) error {
	if routed && errors.Is(err, js.ErrNoStreamResponse) {
		return fmt.Errorf("%w: no stream stores the subject: %w", broker.ErrNotFound, err)
	}
	return err
}

// createMissingStream creates the stream of a channel whose send found no
// stream, with the adapter's stream options, and reports whether the send
// is worth trying again. It creates only a stream the server reports as
// not found and never updates one: a sender's options need not be those
// of the stream's owner (a shorter MaxAge would trim its messages), and a
// stream that exists may answer again once its leader is elected. A
// channel whose stream was seen (seen: the name its acknowledgements
// gave) gets it back only when the adapter's options give that stream
// for the channel; otherwise its shape is not known here (another
// member's stream on "orders.>", say) and the send fails.
func (a *Adapter) createMissingStream(ctx context.Context, c *conn, channel, seen string) bool {
	name, subjects := streamFor(channel, a.chopts.Stream)
	if seen != "" && seen != name || !covers(subjects, channel) {
		return false
	}
	if _, err := c.js.Stream(ctx, name); err == nil || !errors.Is(err, js.ErrStreamNotFound) {
		return err == nil
	}
	so := a.chopts.Stream
	if so.Replicas == 0 {
		so.Replicas = a.replicas
	}
	_, err := c.js.CreateStream(ctx, so.overlay(js.StreamConfig{Name: name, Subjects: subjects}))
	return err == nil || errors.Is(err, js.ErrStreamNameAlreadyInUse)
}

// BatchWindow bounds the messages of one PublishBatch published and not yet
// acknowledged by JetStream; past it, the batch waits for the oldest
// acknowledgement before it publishes the next message.
const BatchWindow = 256

var _ broker.BatchPublisher = (*Adapter)(nil)

// publish sends m and waits for its acknowledgement: an asynchronous
// publish (one reply subscription for every send, no request per message)
// awaited here, bounded by ctx.
func (a *Adapter) publish(ctx context.Context, c *conn, m *nats.Msg, popts []js.PublishOpt) (*js.PubAck, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultOpTimeout)
		defer cancel()
	}
	f, err := c.js.PublishMsgAsync(m, popts...)
	if err != nil {
		return nil, err
	}
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// setHeaders copies message headers to NATS headers, keeping the names as
// they are (NATS headers are case-sensitive). Names and values cannot
// hold CR or LF, and names no colon, space or other control character.
// On a message with an empty payload the name Status is refused: NATS
// clients take an empty message with a Status header (that exact name)
// for a status of the server (nats.go never hands it to a consumer); a
// Description header alone, another case of the name, or a payload are
// read as a message. The error wraps ErrHeaderRefused.
func setHeaders(h nats.Header, src map[string]string, emptyPayload bool) error {
	for k, v := range src {
		if !validHeaderName(k) {
			return fmt.Errorf("%w: header name %q", ErrHeaderRefused, k)
		}
		if k == statusHeader && emptyPayload {
			return fmt.Errorf("%w: header %q on an empty message is read as a status of the server", ErrHeaderRefused, k)
		}
		if strings.ContainsAny(v, "\r\n") {
			return fmt.Errorf("%w: header %q: a value cannot hold CR or LF", ErrHeaderRefused, k)
		}
		h[k] = []string{v}
	}
	return nil
}

// statusHeader is the header NATS clients read as a status of the server
// on an empty message.
const statusHeader = "Status"

// validHeaderName: printable ASCII without colon or space (what the NATS
// header format and its readers take as a name).
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c == ':' || c >= 0x7f {
			return false
		}
	}
	return true
}
