<?php
/**
 * Greenbridge.php: the PHP side of a greenbridge connection. One file, no
 * dependencies, PHP 7.4 or later.
 *
 *     require getenv('WSS_PHP_LIB');               // set by greenbridge; or the path --php-lib prints
 *     $client = Greenbridge\Connection::connect();
 *     while (($message = $client->receive()) !== null) {
 *         $client->send($message);                 // echo, keeping text or binary
 *     }
 *
 * Works in every message mode (WSS_MESSAGE_MODE): `framed` keeps message
 * boundaries, types and close codes exactly; `line` carries one message per
 * line (no "\n" inside); `raw` is a byte stream (messages are whatever one read
 * returns, and go out as binary). In framed mode a script can also subscribe
 * its connection to channels and publish to them:
 *
 *     $client->subscribe('chat') or error_log($client->lastError());
 *     $client->publish('chat', json_encode(['said' => 'hi']), 'json');
 *
 * With history kept (--history-size), subscribe('chat', $offset, $epoch) first
 * gives the client what it missed since that position; lastRecovery() says
 * whether all of it could be.
 */

namespace Greenbridge;

/** One WebSocket message: its type (Message::TEXT or Message::BINARY) and its bytes. */
final class Message
{
    const TEXT = 'text';
    const BINARY = 'binary';

    /** @var string Message::TEXT or Message::BINARY */
    public $type;
    /** @var string the payload; UTF-8 when the type is text */
    public $data;

    public function __construct(string $type, string $data)
    {
        $this->type = $type;
        $this->data = $data;
    }

    public function isText(): bool
    {
        return $this->type === self::TEXT;
    }

    public function isBinary(): bool
    {
        return $this->type === self::BINARY;
    }
}

/** The bridge could not be reached, or the environment is not a greenbridge one. */
class ConnectionException extends \RuntimeException
{
}

/** The connection to one WebSocket client, through the bridge. */
final class Connection
{
    const MODE_RAW = 'raw';
    const MODE_LINE = 'line';
    const MODE_FRAMED = 'framed';

    const TYPE_TEXT = 0x01;
    const TYPE_BINARY = 0x02;
    const TYPE_CLOSE = 0x08;
    // Control frames: the script asks, the bridge replies to each (a status byte, then a reason).
    const TYPE_REPLY = 0x10;
    const TYPE_SUBSCRIBE = 0x11;
    const TYPE_UNSUBSCRIBE = 0x12;
    const TYPE_PUBLISH = 0x13;
    const REPLY_OK = "\x00";
    // A publish frame's kind byte; 0: the bridge chooses (text when valid UTF-8, else binary).
    const PUBLICATION_KINDS = ['' => 0, 'text' => 1, 'binary' => 2, 'json' => 3];
    const FRAME_HEADER_SIZE = 5;

    const READ_SIZE = 262144;
    const WRITE_SIZE = 1048576;
    // Writes block while the client reads slowly; that is back-pressure, not an error.
    const SOCKET_TIMEOUT = 31536000;

    /** @var resource|null */
    private $socket;
    /** @var \Socket|resource|null the same socket for the sockets extension, when it is loaded */
    private $directSocket = null;
    /** @var array<string, string> */
    private $environment;
    /** @var string */
    private $mode;
    /** @var string bytes read but not yet returned as messages, from $offset on */
    private $buffer = '';
    /** @var int */
    private $offset = 0;
    /** @var int line mode: bytes after $offset known to hold no newline */
    private $searched = 0;
    /** @var int|null */
    private $closeCode = null;
    /** @var string */
    private $closeReason = '';
    /** @var Message[] messages read while waiting for a reply, returned first by receive() */
    private $held = [];
    /** @var string|null the payload of the bridge's last reply, until it is taken */
    private $reply = null;
    /** @var string what the last ok reply said besides ok (a recovery's outcome, JSON) */
    private $lastReply = '';
    /** @var string */
    private $lastError = '';
    /** @var array|null the outcome of the last subscribe() with a position */
    private $lastRecovery = null;

    /**
     * Connect back to the bridge and send the connection ID.
     *
     * @param array<string, string>|null $environment the WSS_* variables (default: getenv())
     */
    public static function connect(?array $environment = null, float $timeoutSeconds = 10.0): self
    {
        $environment = $environment ?? getenv();
        foreach (['WSS_CONNECTION_ID', 'WSS_TCP_HOST', 'WSS_TCP_PORT'] as $name) {
            if (!isset($environment[$name]) || $environment[$name] === '') {
                throw new ConnectionException("$name is not set: is this script run by greenbridge?");
            }
        }
        $host = $environment['WSS_TCP_HOST'];
        if (strpos($host, ':') !== false) {
            $host = "[$host]";
        }
        $context = stream_context_create(['socket' => ['tcp_nodelay' => true]]);
        $socket = @stream_socket_client("tcp://$host:{$environment['WSS_TCP_PORT']}", $errno,
            $error, $timeoutSeconds, STREAM_CLIENT_CONNECT, $context);
        if ($socket === false) {
            throw new ConnectionException("cannot connect back to greenbridge: $error ($errno)");
        }
        stream_set_timeout($socket, self::SOCKET_TIMEOUT);
        // Unbuffered reads keep stream_select() truthful about what is waiting.
        stream_set_read_buffer($socket, 0);
        $connection = new self($socket, $environment);
        if (!$connection->write($environment['WSS_CONNECTION_ID'] . "\n")) {
            throw new ConnectionException('the bridge closed the connection before the ID was sent');
        }
        return $connection;
    }

    /** @param resource $socket */
    private function __construct($socket, array $environment)
    {
        $this->socket = $socket;
        $this->environment = $environment;
        $this->mode = $environment['WSS_MESSAGE_MODE'] ?? self::MODE_RAW;
        if (function_exists('socket_import_stream')) {
            $this->directSocket = @socket_import_stream($socket) ?: null;
        }
    }

    public function __destruct()
    {
        $this->disconnect();
    }

    // -- what the bridge told us ----------------------------------------------

    public function id(): string
    {
        return $this->environment['WSS_CONNECTION_ID'];
    }

    public function mode(): string
    {
        return $this->mode;
    }

    /** The user the client's connection token names (WSS_USER), or null without one. */
    public function user(): ?string
    {
        $user = $this->env('USER');
        return $user === '' ? null : $user;
    }

    /** The subprotocol the bridge agreed with the client, or null. */
    public function subprotocol(): ?string
    {
        return $this->env('SUBPROTOCOL');
    }

    /** One WSS_* value by name, with or without the prefix: env('REQUEST_PATH'). */
    public function env(string $name): ?string
    {
        $name = strpos($name, 'WSS_') === 0 ? $name : "WSS_$name";
        return isset($this->environment[$name]) ? (string)$this->environment[$name] : null;
    }

    /** Every WSS_* value; WSS_REQUEST_HEADERS decoded to an array. */
    public function environment(): array
    {
        $values = [];
        foreach ($this->environment as $name => $value) {
            if (strpos((string)$name, 'WSS_') === 0) {
                $values[$name] = $value;
            }
        }
        $values['WSS_REQUEST_HEADERS'] = $this->headers();
        return $values;
    }

    /** @return array<string, string> the request headers, names lower-cased */
    public function headers(): array
    {
        $headers = json_decode($this->environment['WSS_REQUEST_HEADERS'] ?? '{}', true);
        return is_array($headers) ? $headers : [];
    }

    public function header(string $name): ?string
    {
        $headers = $this->headers();
        $name = strtolower($name);
        return isset($headers[$name]) ? $headers[$name] : null;
    }

    /** The socket, to wait on it with stream_select() among other streams. */
    public function stream()
    {
        return $this->socket;
    }

    public function isConnected(): bool
    {
        return $this->socket !== null;
    }

    /** Framed mode: the close code the client sent (1005: none; 1006: it vanished), else null. */
    public function closeCode(): ?int
    {
        return $this->closeCode;
    }

    public function closeReason(): string
    {
        return $this->closeReason;
    }

    // -- receiving ------------------------------------------------------------

    /**
     * The next message; null when the client is gone, or when $timeoutSeconds
     * passed first (isConnected() tells which). After stream_select() reports
     * the stream readable, call receive(0) until it returns null.
     */
    public function receive(?float $timeoutSeconds = null): ?Message
    {
        if ($this->held) {
            return array_shift($this->held);
        }
        $deadline = $timeoutSeconds === null ? null : microtime(true) + $timeoutSeconds;
        while (true) {
            $message = $this->takeMessage();
            if ($message !== null || $this->socket === null) {
                return $message;
            }
            if (!$this->readMore($deadline)) {
                return $this->socket === null ? $this->takeMessage() : null;
            }
        }
    }

    private function readMore(?float $deadline): bool
    {
        if ($deadline === null && $this->directSocket !== null) {
            // PHP's streams poll before every socket read; the sockets
            // extension just reads: one system call per read instead of three.
            $chunk = @socket_read($this->directSocket, self::READ_SIZE);
            if ($chunk === false) {
                $error = socket_last_error($this->directSocket);
                socket_clear_error($this->directSocket);
                if ($error === SOCKET_EINTR) {
                    return false;  // a signal interrupted the wait
                }
                if ($error === SOCKET_EAGAIN) {
                    $chunk = $this->waitAndRead(null);  // the caller made the stream non-blocking
                }
            }
        } else {
            $chunk = $this->waitAndRead($deadline);
        }
        if ($chunk === null) {
            return false;
        }
        if ($chunk === false || $chunk === '') {
            if ($this->mode === self::MODE_FRAMED && $this->closeCode === null) {
                $this->closeCode = 1006;
            }
            $this->disconnect();
            return false;
        }
        $this->buffer .= $chunk;
        return true;
    }

    /** stream_select, then fread: the bytes ('' or false at the end), or null when the wait ended first. */
    private function waitAndRead(?float $deadline): ?string
    {
        $read = [$this->socket];
        $write = $except = null;
        if ($deadline === null) {
            $ready = @stream_select($read, $write, $except, null);
        } else {
            $left = max(0.0, $deadline - microtime(true));
            $ready = @stream_select($read, $write, $except, (int)$left, (int)(fmod($left, 1.0) * 1e6));
        }
        if (!$ready) {
            return null;  // timed out, or a signal interrupted the wait
        }
        $chunk = fread($this->socket, self::READ_SIZE);
        return $chunk === false ? '' : $chunk;
    }

    private function takeMessage(): ?Message
    {
        $available = strlen($this->buffer) - $this->offset;
        if ($available === 0) {
            return null;
        }
        if ($this->mode === self::MODE_FRAMED) {
            return $this->takeFrame($available);
        }
        if ($this->mode === self::MODE_LINE) {
            return $this->takeLine();
        }
        return $this->take(Message::BINARY, $available, $available);
    }

    private function takeLine(): ?Message
    {
        $newline = strpos($this->buffer, "\n", $this->offset + $this->searched);
        if ($newline === false) {
            $this->searched = strlen($this->buffer) - $this->offset;
            return null;
        }
        $this->searched = 0;
        $length = $newline - $this->offset;
        $line = (string)substr($this->buffer, $this->offset, $length);
        return $this->take(self::isUtf8($line) ? Message::TEXT : Message::BINARY, $length + 1, $length, $line);
    }

    private function takeFrame(int $available): ?Message
    {
        while ($available >= self::FRAME_HEADER_SIZE) {
            $header = unpack('Ctype/Nlength', $this->buffer, $this->offset);
            $size = self::FRAME_HEADER_SIZE + $header['length'];
            if ($available < $size) {
                return null;
            }
            $payload = (string)substr($this->buffer, $this->offset + self::FRAME_HEADER_SIZE, $header['length']);
            if ($header['type'] === self::TYPE_CLOSE) {
                $this->closeCode = strlen($payload) >= 2 ? unpack('n', $payload)[1] : 1005;
                $this->closeReason = (string)substr($payload, 2);
                $this->take('', $size, 0);
                $this->disconnect();
                return null;
            }
            if ($header['type'] !== self::TYPE_REPLY) {
                $type = $header['type'] === self::TYPE_TEXT ? Message::TEXT : Message::BINARY;
                return $this->take($type, $size, 0, $payload);
            }
            $this->reply = $payload;
            $this->take('', $size, 0);
            $available = strlen($this->buffer) - $this->offset;
        }
        return null;
    }

    /** Consume $consumed bytes of the buffer; return them (or $data) as a message. */
    private function take(string $type, int $consumed, int $length, ?string $data = null): ?Message
    {
        if ($data === null && $length > 0) {
            $data = $this->offset === 0 && $length === strlen($this->buffer)
                ? $this->buffer : (string)substr($this->buffer, $this->offset, $length);
        }
        $this->offset += $consumed;
        // Drop consumed bytes now and then, not on every message (that would be quadratic).
        if ($this->offset === strlen($this->buffer)) {
            $this->buffer = '';
            $this->offset = 0;
        } elseif ($this->offset > self::READ_SIZE) {
            $this->buffer = (string)substr($this->buffer, $this->offset);
            $this->offset = 0;
        }
        return $type === '' ? null : new Message($type, (string)$data);
    }

    // -- sending --------------------------------------------------------------

    /**
     * Send a Message, or a string: as $type when given, else as text when it
     * is valid UTF-8 and binary otherwise. False when the client is gone.
     *
     * @param Message|string $message
     */
    public function send($message, ?string $type = null): bool
    {
        if ($message instanceof Message) {
            return $this->sendMessage($message->type, $message->data);
        }
        $message = (string)$message;
        return $this->sendMessage($type ?? (self::isUtf8($message) ? Message::TEXT : Message::BINARY), $message);
    }

    public function sendText(string $text): bool
    {
        return $this->sendMessage(Message::TEXT, $text);
    }

    public function sendBinary(string $data): bool
    {
        return $this->sendMessage(Message::BINARY, $data);
    }

    private function sendMessage(string $type, string $data): bool
    {
        if ($type !== Message::TEXT && $type !== Message::BINARY) {
            throw new \InvalidArgumentException("message type must be 'text' or 'binary', not '$type'");
        }
        if ($this->socket === null) {
            return false;
        }
        if ($this->mode === self::MODE_FRAMED) {
            if ($type === Message::TEXT && !self::isUtf8($data)) {
                throw new \InvalidArgumentException('a text message must be valid UTF-8');
            }
            return $this->writeFrame($type === Message::TEXT ? self::TYPE_TEXT : self::TYPE_BINARY, $data);
        }
        if ($this->mode === self::MODE_LINE) {
            if (strpos($data, "\n") !== false) {
                throw new \InvalidArgumentException('in line mode a message cannot contain "\n"');
            }
            return $this->write($data . "\n");
        }
        return $this->write($data);
    }

    /**
     * Close the WebSocket and the connection to the bridge. The code and
     * reason reach the client in framed mode; in the other modes the client
     * gets 1000 when the script then exits with status 0.
     */
    public function close(int $code = 1000, string $reason = ''): void
    {
        if ($this->socket !== null && $this->mode === self::MODE_FRAMED) {
            $payload = pack('n', $code) . $reason;
            $this->write(pack('CN', self::TYPE_CLOSE, strlen($payload)) . $payload);
        }
        $this->disconnect();
    }

    /** One framed-mode frame whose payload is $head then $body (a large body is not copied). */
    private function writeFrame(int $type, string $body, string $head = ''): bool
    {
        $header = pack('CN', $type, strlen($head) + strlen($body)) . $head;
        return strlen($body) <= 65536 ? $this->write($header . $body)
            : $this->write($header) && $this->write($body);
    }

    // -- channels (framed mode) -----------------------------------------------

    /**
     * Subscribe this connection to $channel: from now on the client receives
     * what is published there. True when subscribed (or it was already), false
     * when refused: lastError() says why.
     *
     * With $offset and $epoch (the position of the last publication the client
     * saw: the "offset" and "epoch" of its envelope), the client first receives
     * what was published after it, in order, then new publications; true then
     * means subscribed, and lastRecovery() says whether everything missed came.
     */
    public function subscribe(string $channel, ?int $offset = null, ?string $epoch = null): bool
    {
        $this->lastRecovery = null;
        if ($offset === null && $epoch === null) {
            return $this->control(self::TYPE_SUBSCRIBE, $channel);
        }
        if ($offset === null || $epoch === null || $offset < 0 || $epoch === '') {
            throw new \InvalidArgumentException('recovery needs both an offset (0 or more) and an epoch');
        }
        if (!$this->control(self::TYPE_SUBSCRIBE, "\x00" . pack('J', $offset) . $epoch, $channel)) {
            return false;
        }
        $this->lastRecovery = json_decode($this->lastReply, true);
        return true;
    }

    /**
     * The outcome of the last subscribe() given a position, or null: ['recovered' =>
     * bool, 'offset' => int, 'epoch' => string] (the channel's position now), and
     * 'reason' when not recovered ('epoch changed', 'history trimmed or expired',
     * 'no history kept', ...): then the client did not get what it missed, and must
     * load the state afresh.
     */
    public function lastRecovery(): ?array
    {
        return $this->lastRecovery;
    }

    /** End this connection's subscription to $channel (true also when there was none). */
    public function unsubscribe(string $channel): bool
    {
        return $this->control(self::TYPE_UNSUBSCRIBE, $channel);
    }

    /**
     * Publish $data to every client subscribed to $channel, as $type ('text',
     * 'json' or 'binary') or, without one, as text when it is valid UTF-8 and
     * binary otherwise. False when refused (a bad channel name, data over the
     * size limit, text that is not UTF-8, JSON that does not parse): lastError() says why.
     */
    public function publish(string $channel, string $data, ?string $type = null): bool
    {
        if (!isset(self::PUBLICATION_KINDS[$type ?? ''])) {
            throw new \InvalidArgumentException("publication type must be 'text', 'json' or 'binary', not '$type'");
        }
        if (strlen($channel) > 0xFFFF) {
            $this->lastError = 'channel name longer than 65535 bytes';
            return false;
        }
        return $this->control(self::TYPE_PUBLISH, $data, pack('Cn', self::PUBLICATION_KINDS[$type ?? ''], strlen($channel)) . $channel);
    }

    /** Why the last subscribe(), unsubscribe() or publish() returned false ('' after a success). */
    public function lastError(): string
    {
        return $this->lastError;
    }

    /** Send one control frame and wait for its reply; client messages read meanwhile are held for receive(). */
    private function control(int $type, string $body, string $head = ''): bool
    {
        $this->lastError = '';
        if ($this->mode !== self::MODE_FRAMED) {
            $this->lastError = "channels need the framed message mode, not {$this->mode}";
            return false;
        }
        $this->reply = null;
        if ($this->socket === null || !$this->writeFrame($type, $body, $head)) {
            $this->lastError = 'the connection is closed';
            return false;
        }
        while ($this->reply === null) {
            $message = $this->takeMessage();
            if ($message !== null) {
                $this->held[] = $message;
            } elseif ($this->reply !== null) {
                break;
            } elseif ($this->socket === null) {
                $this->lastError = 'the connection closed before the bridge replied';
                return false;
            } else {
                $this->readMore(null);
            }
        }
        [$reply, $this->reply] = [$this->reply, null];
        if (strncmp($reply, self::REPLY_OK, 1) === 0) {
            $this->lastReply = (string)substr($reply, 1);
            return true;
        }
        $this->lastError = (string)substr($reply, 1) ?: 'refused';
        return false;
    }

    private function write(string $data): bool
    {
        $length = strlen($data);
        for ($done = 0; $done < $length; $done += $written) {
            $chunk = $done === 0 && $length <= self::WRITE_SIZE ? $data : substr($data, $done, self::WRITE_SIZE);
            $written = @fwrite($this->socket, $chunk);
            if ($written === false || $written === 0) {
                $this->disconnect();
                return false;
            }
        }
        return true;
    }

    private function disconnect(): void
    {
        if ($this->socket !== null) {
            $this->directSocket = null;  // it holds the stream: drop it first
            fclose($this->socket);
            $this->socket = null;
        }
    }

    private static function isUtf8(string $data): bool
    {
        return preg_match('//u', $data) === 1;
    }
}
