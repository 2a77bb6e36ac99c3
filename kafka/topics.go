package kafka

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// ensureTopic creates topic with the options when it does not exist and
// waits until every partition has a leader. An existing topic is used as
// it is. Topics seen once are not checked again.
func (a *Adapter) ensureTopic(ctx context.Context, c *conn, topic string, o TopicOptions) error {
	if _, ok := c.topics.Load(topic); ok {
		return nil
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	cfg := kafkago.TopicConfig{Topic: topic, NumPartitions: o.Partitions, ReplicationFactor: o.ReplicationFactor}
	keys := make([]string, 0, len(o.Configs))
	for k := range o.Configs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cfg.ConfigEntries = append(cfg.ConfigEntries, kafkago.ConfigEntry{ConfigName: k, ConfigValue: o.Configs[k]})
	}
	res, err := c.client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{cfg}})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
		return fmt.Errorf("channels/kafka: creating topic %q: %w", topic, err)
	}
	ids, err := a.partitions(ctx, c, topic, true)
	if err != nil {
		return err
	}
	c.storePartitions(topic, ids)
	return nil
}

// partitions returns the partition ids of topic once each has a leader;
// with wait false, a topic that does not exist is an error at once.
func (a *Adapter) partitions(ctx context.Context, c *conn, topic string, await bool) ([]int, error) {
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		md, err := c.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
		if err == nil {
			for _, t := range md.Topics {
				if t.Name != topic {
					continue
				}
				if t.Error != nil {
					err = t.Error
					if !await && errors.Is(err, kafkago.UnknownTopicOrPartition) {
						return nil, fmt.Errorf("channels/kafka: topic %q: %w", topic, err)
					}
					break
				}
				ids := make([]int, 0, len(t.Partitions))
				ready := len(t.Partitions) > 0
				for _, p := range t.Partitions {
					ready = ready && p.Error == nil && p.Leader.Host != ""
					ids = append(ids, p.ID)
				}
				if ready {
					sort.Ints(ids)
					return ids, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return nil, fmt.Errorf("channels/kafka: topic %q has no leader for every partition: %w", topic, err)
		case <-time.After(wait):
		}
	}
}

// pinStart commits the start offsets of the partitions of topic the group
// has none for (startOffsets): their end, their beginning, or the first
// offset stored at or after the time of a StartAt position. A group with
// live members is left alone (its members decide).
//
// Members starting a new group at the same time each pin the partitions
// at the end they read: the committed offsets are read again just before
// pinning, and a partition committed meanwhile is left alone unless it
// holds another member's pin past this one; after pinning, a later pin
// past this one is brought back (at most a few times). The group starts at
// the earliest pin: a message sent after any of the members returned from
// Subscribe is never skipped.
func (a *Adapter) pinStart(ctx context.Context, c *conn, topic, group string, start broker.StartPosition) error {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	ids, err := a.partitions(ctx, c, topic, true)
	if err != nil {
		return err
	}
	committed, err := readCommitted(ctx, c, topic, group, ids)
	if err != nil {
		return err
	}
	if pinRead != nil {
		pinRead()
	}
	has := map[int]bool{}
	for id := range committed {
		has[id] = true
	}
	missing, fromFirst := startOffsets(ids, has, start.From == broker.FromOldest)
	if len(missing) == 0 {
		return nil
	}
	offs, err := listOffsets(ctx, c, topic, missing)
	if err != nil {
		return err
	}
	pins := map[int]int64{}
	for _, p := range offs {
		pins[p.Partition] = p.LastOffset
		if fromFirst {
			pins[p.Partition] = p.FirstOffset
		}
	}
	if start.From == broker.FromTime && !fromFirst {
		// The first offset stored at or after the time (ListOffsets by
		// timestamp); a partition with none starts at its end.
		at := make([]kafkago.OffsetRequest, len(missing))
		for i, m := range missing {
			at[i] = kafkago.TimeOffsetOf(m.Partition, start.Time)
		}
		offs, err := listOffsets(ctx, c, topic, at)
		if err != nil {
			return err
		}
		for _, p := range offs {
			for off := range p.Offsets {
				if off >= 0 {
					pins[p.Partition] = off
				}
			}
		}
	}
	if pinListed != nil {
		pinListed()
	}
	for range 3 {
		if committed, err = readCommitted(ctx, c, topic, group, ids); err != nil {
			return err
		}
		var commits []kafkago.OffsetCommit
		for id, off := range pins {
			if cur, ok := committed[id]; !ok || cur.Metadata == metaPin && cur.CommittedOffset > off {
				commits = append(commits, kafkago.OffsetCommit{Partition: id, Offset: off, Metadata: metaPin})
			}
		}
		if len(commits) == 0 {
			return nil
		}
		if done, err := commitPins(ctx, c, topic, group, commits); done || err != nil {
			return err
		}
	}
	return nil
}

// pinRead and pinListed, set by tests, run after pinStart first read the
// committed offsets, and after it read the partitions' ends.
var pinRead, pinListed func()

// metaPin is the metadata of a start offset pinned by pinStart, before any
// member committed.
const metaPin = "pin"

// readCommitted reads the committed offsets of the partitions ids of topic
// for group: the partitions with one.
func readCommitted(ctx context.Context, c *conn, topic, group string, ids []int) (map[int]kafkago.OffsetFetchPartition, error) {
	var fetched *kafkago.OffsetFetchResponse
	err := untilSettled(ctx, func() error {
		var err error
		if fetched, err = c.client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ids}}); err == nil {
			err = fetched.Error
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("channels/kafka: reading the offsets of group %q: %w", group, err)
	}
	out := map[int]kafkago.OffsetFetchPartition{}
	for _, p := range fetched.Topics[topic] {
		if p.Error == nil && p.CommittedOffset >= 0 {
			out[p.Partition] = p
		}
	}
	return out, nil
}

// commitPins commits pins as no member of group (possible while the group
// has no member); done when the group has live members, which own its
// position.
func commitPins(ctx context.Context, c *conn, topic, group string, commits []kafkago.OffsetCommit) (done bool, err error) {
	err = untilSettled(ctx, func() error {
		res, err := c.client.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: group, GenerationID: -1,
			Topics: map[string][]kafkago.OffsetCommit{topic: commits}})
		if err == nil {
			for _, p := range res.Topics[topic] {
				if p.Error != nil {
					return p.Error
				}
			}
		}
		return err
	})
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, kafkago.UnknownMemberId), errors.Is(err, kafkago.IllegalGeneration),
		errors.Is(err, kafkago.RebalanceInProgress):
		// The group has live members: they own its position.
		return true, nil
	default:
		return true, fmt.Errorf("channels/kafka: setting the start offsets of group %q: %w", group, err)
	}
}

// startOffsets lists the partitions of ids without a committed offset and
// where they start: a group with no committed offset at all is new and
// starts at the end of every partition (at the beginning with
// fromBeginning); in a group that has committed offsets, a partition without
// one was added to the topic since (while the group had no member, or
// before the group's members noticed it): it starts at its beginning, so
// that what producers wrote there meanwhile is read.
func startOffsets(ids []int, committed map[int]bool, fromBeginning bool) (missing []kafkago.OffsetRequest, fromFirst bool) {
	fromFirst = fromBeginning || len(committed) > 0
	for _, id := range ids {
		if committed[id] {
			continue
		}
		if fromFirst {
			missing = append(missing, kafkago.FirstOffsetOf(id))
		} else {
			missing = append(missing, kafkago.LastOffsetOf(id))
		}
	}
	return missing, fromFirst
}

// listOffsets reads the first and last offsets of partitions, retrying
// while a new topic's leaders settle.
func listOffsets(ctx context.Context, c *conn, topic string, reqs []kafkago.OffsetRequest) ([]kafkago.PartitionOffsets, error) {
	var out []kafkago.PartitionOffsets
	err := untilSettled(ctx, func() error {
		lo, err := c.client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
		if err != nil {
			return err
		}
		for _, p := range lo.Topics[topic] {
			if p.Error != nil {
				return p.Error
			}
		}
		out = lo.Topics[topic]
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("channels/kafka: reading the offsets of topic %q: %w", topic, err)
	}
	return out, nil
}

// untilSettled runs op until it succeeds or fails with an error that is
// not transient (a new topic's leaders, a group coordinator loading on a
// broker that just started), backing off, bounded by ctx.
func untilSettled(ctx context.Context, op func() error) error {
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		err := op()
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// transient tells the errors of a topic whose partitions are still moving
// to their leaders.
func transient(err error) bool {
	return errors.Is(err, kafkago.NotLeaderForPartition) || errors.Is(err, kafkago.LeaderNotAvailable) ||
		errors.Is(err, kafkago.UnknownTopicOrPartition) || errors.Is(err, kafkago.NotCoordinatorForGroup) ||
		errors.Is(err, kafkago.GroupCoordinatorNotAvailable) || errors.Is(err, kafkago.GroupLoadInProgress)
}

// Lag reports how far group is behind on channel. Pending counts the
// messages this process has read for the group and not settled (Kafka does
// not tell what other members hold); Lag the rest of the messages between
// the group's committed offsets and the end of each partition.
func (a *Adapter) Lag(ctx context.Context, channel, group string) (broker.GroupLag, error) {
	c, err := a.conn()
	if err != nil {
		return broker.GroupLag{}, err
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	ids, err := a.partitions(ctx, c, channel, false)
	if err != nil {
		return broker.GroupLag{}, err
	}
	gid := GroupID(group, channel)
	var fetched *kafkago.OffsetFetchResponse
	err = untilSettled(ctx, func() error {
		var err error
		if fetched, err = c.client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: gid, Topics: map[string][]int{channel: ids}}); err == nil {
			err = fetched.Error
		}
		return err
	})
	if err != nil {
		return broker.GroupLag{}, err
	}
	reqs := make([]kafkago.OffsetRequest, 0, len(ids))
	for _, id := range ids {
		reqs = append(reqs, kafkago.LastOffsetOf(id))
	}
	offs, err := listOffsets(ctx, c, channel, reqs)
	if err != nil {
		return broker.GroupLag{}, err
	}
	end := map[int]int64{}
	for _, p := range offs {
		end[p.Partition] = p.LastOffset
	}
	var behind int64
	for _, p := range fetched.Topics[channel] {
		if p.CommittedOffset >= 0 && end[p.Partition] > p.CommittedOffset {
			behind += end[p.Partition] - p.CommittedOffset
		}
	}
	var pending int64
	for _, sub := range a.life.Subs.List() {
		if s, ok := sub.(*subscription); ok && s.ch.Name == channel && s.ch.Group == group {
			pending += s.pending()
		}
	}
	return broker.GroupLag{Lag: max(behind-pending, 0), Pending: pending}, nil
}

// RemoveChannel deletes the channel's topic and the consumer groups of it
// that this adapter subscribed. This adapter's subscriptions of the channel
// are drained first (a group with members cannot be deleted); members in
// other processes must have stopped.
func (a *Adapter) RemoveChannel(ctx context.Context, channel string) error {
	c, err := a.conn()
	if err != nil {
		return err
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	var errs []error
	for _, sub := range a.life.Subs.List() {
		if s, ok := sub.(*subscription); ok && s.ch.Name == channel {
			if err := s.Drain(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if g, ok := a.groups.LoadAndDelete(channel); ok {
		var ids []string
		g.(*sync.Map).Range(func(k, _ any) bool { ids = append(ids, k.(string)); return true })
		if err := deleteGroups(ctx, c, ids); err != nil {
			errs = append(errs, fmt.Errorf("channels/kafka: deleting the groups of %q: %w", channel, err))
		}
	}
	res, err := c.client.DeleteTopics(ctx, &kafkago.DeleteTopicsRequest{Topics: []string{channel}})
	if err == nil {
		err = res.Errors[channel]
	}
	switch {
	case err != nil && !errors.Is(err, kafkago.UnknownTopicOrPartition):
		errs = append(errs, fmt.Errorf("channels/kafka: deleting topic %q: %w", channel, err))
	case err == nil:
		// Deletion completes in the background: wait until the brokers no
		// longer list the topic, so that what follows sees it gone.
		if werr := topicGone(ctx, c, channel); werr != nil {
			errs = append(errs, fmt.Errorf("channels/kafka: topic %q still listed after its deletion: %w", channel, werr))
		}
	}
	c.topics.Delete(channel)
	return errors.Join(errs...)
}

// deleteGroups deletes groups, waiting while a member that just left is
// still counted.
func deleteGroups(ctx context.Context, c *conn, ids []string) error {
	for wait := 20 * time.Millisecond; len(ids) > 0; wait = min(2*wait, 500*time.Millisecond) {
		res, err := c.client.DeleteGroups(ctx, &kafkago.DeleteGroupsRequest{GroupIDs: ids})
		if err != nil {
			return err
		}
		var again []string
		for id, e := range res.Errors {
			switch {
			case e == nil, errors.Is(e, kafkago.GroupIdNotFound):
			case errors.Is(e, kafkago.NonEmptyGroup), transient(e):
				again = append(again, id)
			default:
				return e
			}
		}
		if ids = again; len(ids) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("groups %v still have members: %w", ids, ctx.Err())
		case <-time.After(wait):
		}
	}
	return nil
}

// topicGone waits until the metadata no longer lists topic.
func topicGone(ctx context.Context, c *conn, topic string) error {
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		md, err := c.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
		if err == nil {
			gone := true
			for _, t := range md.Topics {
				if t.Name == topic && t.Error == nil {
					gone = false
				}
			}
			if gone {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}
