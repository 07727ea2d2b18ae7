# What each module costs in the heap once imported, under micropython: imports the modules
# named on the command line one by one and prints, as JSON, the live heap each import added
# and the modules it loaded (a module's not-yet-loaded imports count with it).
#   micropython import_probe.py MODULE...
import gc
import json
import sys

out = []
for name in sys.argv[1:]:
    before = set(sys.modules)
    gc.collect()
    used = gc.mem_alloc()
    __import__(name)
    gc.collect()
    out.append([name, gc.mem_alloc() - used, sorted(set(sys.modules) - before)])
print(json.dumps(out))
