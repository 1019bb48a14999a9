#!/usr/bin/env python3
"""A DNS hook for the exec provider: publishes TXT records through pebble-challtestsrv.

Usage: challtestsrv_hook.py MANAGEMENT_PORT present|cleanup NAME VALUE
(the bridge appends the last three). Every call is appended to $HOOK_LOG when set.
"""

import json
import os
import sys
import urllib.request

port, action, name, value = sys.argv[1:5]
if os.environ.get("HOOK_LOG"):
    with open(os.environ["HOOK_LOG"], "a") as log:
        log.write("%s %s %s\n" % (action, name, value))
if os.environ.get("HOOK_FAIL") == action:
    sys.exit("refusing to %s %s (HOOK_FAIL)" % (action, name))
command = {"present": "set-txt", "cleanup": "clear-txt"}[action]
body = {"host": name + ".", "value": value} if action == "present" else {"host": name + "."}
request = urllib.request.Request("http://127.0.0.1:%s/%s" % (port, command),
                                 data=json.dumps(body).encode(), method="POST")
urllib.request.urlopen(request, timeout=10).read()
