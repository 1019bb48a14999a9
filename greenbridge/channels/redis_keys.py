"""What greenbridge keeps in Redis: the key names, the pub/sub payload and the Lua scripts.

Every key starts with ``greenbridge.``; several clusters on one Redis use
different database numbers in their --broker URLs. Per channel C:

- ``greenbridge.ch.C``: the pub/sub channel its publications travel on;
- ``greenbridge.history.C``: its history, a stream whose entry IDs are the
  publications' offsets (``<offset>-0``), each entry one field ``d``: the
  kind byte and the data;
- ``greenbridge.meta.C``: a hash, its epoch ``e`` and its top offset ``s``;
- ``greenbridge.presence.C``: a hash, client ID -> presence entry (JSON);
- ``greenbridge.presence-expiry.C``: a sorted set, client ID -> unix time
  its entry expires unless its node refreshes it.

And ``greenbridge.control`` (pub/sub: the API's actions on users' connections,
JSON) and ``greenbridge.nodes`` (a hash, node uid -> its ``info`` entry with
``expires``).

A pub/sub message is ``<offset>:<epoch>:`` (``0::`` when the channel keeps no
history), one kind byte (the index in publication.KINDS), then the data; or a
sync marker, ``s`` and a nonce, that a history read published after it read:
once the marker reached a node, so did every publication the read returned
(one order per channel, and the two connections a node has to Redis do not
keep the same pace).
"""

from greenbridge.channels.publication import KINDS, Publication

PREFIX = b"greenbridge."
PUBSUB_PREFIX = b"greenbridge.ch."
CONTROL = b"greenbridge.control"
NODES = "greenbridge.nodes"
PRESENCE_PATTERN = "greenbridge.presence.*"
PRESENCE_PREFIX = "greenbridge.presence."
SYNC = b"s"


def pubsub_channel(channel):
    return PUBSUB_PREFIX + channel.encode("ascii")


def history_stream(channel):
    return "greenbridge.history." + channel


def history_meta(channel):
    return "greenbridge.meta." + channel


def presence_hash(channel):
    return PRESENCE_PREFIX + channel


def presence_expiry(channel):
    return "greenbridge.presence-expiry." + channel


def kind_and_data(publication):
    return bytes((KINDS.index(publication.kind),)) + publication.data


def decode_message(channel, payload):
    """The Publication a pub/sub message carries; ValueError or IndexError when malformed."""
    offset_end = payload.index(b":")
    epoch_end = payload.index(b":", offset_end + 1)
    return Publication(channel, payload[epoch_end + 2:], KINDS[payload[epoch_end + 1]],
                       int(payload[:offset_end]), payload[offset_end + 1:epoch_end].decode()
                       or None)


def decode_entry(channel, epoch, entry):
    """The Publication of one history stream entry ``[id, [b"d", kind and data]]``."""
    entry_id, fields = entry
    value = fields[1]
    return Publication(channel, value[1:], KINDS[value[0]], int(entry_id.split(b"-")[0]), epoch)


# The channel's epoch (KEYS[3]: meta), made from ARGV[5] when it has none. A new epoch
# drops a history left from an older one (KEYS[2]: stream): its IDs would be above the
# new offsets.
_EPOCH = """
local epoch = redis.call('hget', KEYS[3], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('del', KEYS[2])
  redis.call('hset', KEYS[3], 'e', epoch)
end
"""

# KEYS: pub/sub channel, stream, meta. ARGV: kind byte + data, history size (0: none),
# history TTL in milliseconds (0: none), meta TTL, an epoch to start with when the channel
# has none.
# Returns {offset, epoch}.
PUBLISH = """
local size = tonumber(ARGV[2])
if size == 0 then
  redis.call('publish', KEYS[1], '0::' .. ARGV[1])
  return {0, ''}
end
""" + _EPOCH + """
local offset = redis.call('hincrby', KEYS[3], 's', 1)
redis.call('xadd', KEYS[2], 'MAXLEN', size, offset .. '-0', 'd', ARGV[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('pexpire', KEYS[2], ARGV[3])
end
redis.call('expire', KEYS[3], ARGV[4])
redis.call('publish', KEYS[1], offset .. ':' .. epoch .. ':' .. ARGV[1])
return {offset, epoch}
"""

# KEYS: pub/sub channel, stream, meta. ARGV: meta TTL, direction ("none", "forward" or
# "reverse"), the first ID (XRANGE's start, XREVRANGE's end), count (-1: all), an epoch to
# start with, a sync marker to publish after the read ("": none). Returns {top offset,
# epoch, entries}. The epoch is made here when
# missing, so that a subscriber that saw the position of an empty channel can recover
# from it.
HISTORY = _EPOCH + """
redis.call('expire', KEYS[3], ARGV[1])
local top = tonumber(redis.call('hget', KEYS[3], 's') or '0')
local entries = {}
if ARGV[2] ~= 'none' then
  local range, last = 'xrange', '+'
  if ARGV[2] == 'reverse' then
    range, last = 'xrevrange', '-'
  end
  if tonumber(ARGV[4]) < 0 then
    entries = redis.call(range, KEYS[2], ARGV[3], last)
  else
    entries = redis.call(range, KEYS[2], ARGV[3], last, 'COUNT', ARGV[4])
  end
end
if ARGV[6] ~= '' then
  redis.call('publish', KEYS[1], ARGV[6])
end
return {top, epoch, entries}
"""

# KEYS: presence hash, its expiry set. ARGV: now. Drops the expired entries, returns the
# others (HGETALL's flat list). In chunks: Lua's unpack takes a few thousand values at most.
PRESENCE = """
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', ARGV[1])
for first = 1, #expired, 1000 do
  local chunk = {unpack(expired, first, math.min(first + 999, #expired))}
  redis.call('hdel', KEYS[1], unpack(chunk))
  redis.call('zrem', KEYS[2], unpack(chunk))
end
return redis.call('hgetall', KEYS[1])
"""
