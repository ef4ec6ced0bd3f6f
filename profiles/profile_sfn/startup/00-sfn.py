"""sfn-stream beamline session (IPython startup file).

    ipython --profile-dir=profiles/profile_sfn

Sets up a RunEngine, the simulated beamline (monochromator ``mono``, ion chambers ``xas``,
powder detector ``powder``, loaded with the demo sample), the sfn-stream plugin and the Tiled
writer. Environment:

- SFN_TILED_URI, SFN_TILED_API_KEY: write to this Tiled server (default: start an embedded one
  in ./sfn-data and print its address).
- SFN_ZMQ_PUBLISH=host:port: publish documents to bluesky's 0MQ proxy instead, and leave the
  analysis and writing to the service in callbacks/sfn_service.py.
"""

import os

from bluesky import RunEngine

from sfn_stream.simulated_beamline import load_demo_sample, powder_scan, simulated_beamline, xanes_scan  # noqa: F401
from sfn_stream.live.catalog import TiledService, runs_where, samples_where  # noqa: F401
from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer

RE = RunEngine({})
sample = load_demo_sample()
mono, xas, powder = simulated_beamline(sample)

if os.environ.get("SFN_ZMQ_PUBLISH"):
    from bluesky.callbacks.zmq import Publisher

    RE.subscribe(Publisher(os.environ["SFN_ZMQ_PUBLISH"]))
    client = plugin = tiled_service = None
    print(f"sfn-stream: publishing documents to {os.environ['SFN_ZMQ_PUBLISH']} (run callbacks/sfn_service.py)")
else:
    if os.environ.get("SFN_TILED_URI"):
        from tiled.client import from_uri

        tiled_service = None
        client = from_uri(os.environ["SFN_TILED_URI"], api_key=os.environ.get("SFN_TILED_API_KEY"))
    else:
        tiled_service = TiledService(os.environ.get("SFN_DATA_DIR", "sfn-data"))
        client = tiled_service.client()
        print(f"sfn-stream: embedded Tiled at {tiled_service.uri} (API key {tiled_service.api_key})")
    plugin = SfnPlugin(make_tiled_writer(client))
    RE.subscribe(plugin)

print(f"""sfn-stream session ready. Sample loaded on the simulated beamline: {sample.name}
  RE(powder_scan(powder, sample="S1"))
  RE(xanes_scan(xas, mono, "{sample.absorber}", composition="{sample.formula}", sample="S1"))
  plugin.summaries                                  # what the plugin said about each run
  runs_where(client, species="{sample.absorber}1+")             # query the predictions in Tiled
  samples_where(client, crystal_system="trigonal", species="{sample.absorber}1+")""")
