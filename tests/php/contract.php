<?php
// Test handler written with Greenbridge.php, for tests/test_php_environment.py: what the
// library makes of the environment greenbridge gives (?do=report), and which variables it
// needs to connect back (?do=connect_back&names=A,B,C).
require __DIR__ . '/../../greenbridge/php/Greenbridge.php';

use Greenbridge\Connection;
use Greenbridge\ConnectionException;

parse_str(getenv('WSS_REQUEST_QUERY') ?: '', $q);
$environment = getenv();

if (($q['do'] ?? '') === 'connect_back') {
    // Each named variable left out: the library must refuse to connect, naming it.
    $names = explode(',', $q['names']);
    $refusals = [];
    $client = null;
    foreach ($names as $name) {
        $without = $environment;
        unset($without[$name]);
        try {
            $client = Connection::connect($without);  // it needed no such variable
            break;
        } catch (ConnectionException $e) {
            $refusals[$name] = $e->getMessage();
        }
    }
    // The named variables alone must be enough.
    $client = $client ?? Connection::connect(array_intersect_key($environment, array_flip($names)));
    $client->send(json_encode(['refusals' => $refusals], JSON_THROW_ON_ERROR));
    $client->receive();
    exit(0);
}

// The client sends the names the contract declares; each is looked up through the library.
$client = Connection::connect();
$names = json_decode($client->receive()->data, true);
$byName = [];
$byShortName = [];
foreach ($names as $name) {
    $byName[$name] = $client->env($name);
    $byShortName[$name] = $client->env(substr($name, strlen('WSS_')));
}
$client->send(json_encode([
    'environment' => $client->environment(),
    'env' => $byName,
    'env_without_prefix' => $byShortName,
    'id' => $client->id(),
    'mode' => $client->mode(),
    'subprotocol' => $client->subprotocol(),
    'headers' => $client->headers(),
], JSON_THROW_ON_ERROR));
$client->receive();
