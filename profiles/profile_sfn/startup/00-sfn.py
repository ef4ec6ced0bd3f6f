"""sfn-stream beamline session (IPython startup file).

    ipython --profile-dir=profiles/profile_sfn

Sets up a RunEngine, the simulated beamline (monochromator ``mono``, ion chambers ``xas``,
powder detector ``powder``, loaded with the demo sample), the sfn-stream plugin with the next-edge agent
(``agent``) as an after-stop consumer, and the Tiled writer. ``measure_with_agent(material=..., first_edge=...)``
measures a multi-metal corpus material end to end (PXRD, then the agent's edges until done). Environment:

- SFN_TILED_URI, SFN_TILED_API_KEY: write to this Tiled server (default: start an embedded one
  in ./sfn-data and print its address).
- SFN_ZMQ_PUBLISH=host:port: publish documents to bluesky's 0MQ proxy instead, and leave the
  analysis and writing to the service in callbacks/sfn_service.py.
"""

import os

from bluesky import RunEngine

from sfn_stream.live.catalog import TiledService, runs_where, samples_where  # noqa: F401
from sfn_stream.live.consumers import NextEdgeAgent, NextEdgeOptions
from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer
from sfn_stream.simulated_beamline import (  # noqa: F401
    load_demo_sample,
    powder_scan,
    simulated_beamline,
    xanes_scan,
)

RE = RunEngine({})
sample = load_demo_sample()
mono, xas, powder = simulated_beamline(sample)

if os.environ.get("SFN_ZMQ_PUBLISH"):
    from bluesky.callbacks.zmq import Publisher

    RE.subscribe(Publisher(os.environ["SFN_ZMQ_PUBLISH"]))
    client = plugin = tiled_service = agent = None
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
    agent = NextEdgeAgent(NextEdgeOptions())
    plugin = SfnPlugin(make_tiled_writer(client), consumers=[agent])
    RE.subscribe(plugin)


def measure_with_agent(material=None, first_edge=None, *, name=None, max_edges=None, progress=True):
    """Measure a multi-metal corpus material on the simulated beamline: PXRD, the first edge (``first_edge``
    or the agent's choice), then the agent's edges until it says done; one line per decision. ``material``:
    a corpus id (``!sfn-stream agent list-samples``; default: the first test-split one). Returns the
    ``AgentMeasurement`` (``.steps``, ``.edges_measured``); the decisions are runs in Tiled."""
    from sfn_stream.simulated_beamline import agent_session

    if agent is None:
        raise RuntimeError("the agent runs beside the 0MQ service here (SFN_ZMQ_PUBLISH): start "
                           "callbacks/sfn_service.py --agent and read its decisions from Tiled")
    material = material or _first_test_material()

    def show(step):
        print(agent_session.format_step(step, len(step.edges_measured) + len(step.edges_remaining)))

    result = agent_session.measure_with_agent(RE, plugin, agent, material, first_edge=first_edge, name=name,
                                              max_edges=max_edges, on_step=show if progress else None)
    if progress:
        print(f"{result.sample}: measured {', '.join(result.edges_measured)} of {', '.join(result.metals)}")
    return result


def _first_test_material():
    from sfn_stream.offline.training import read_unified_splits
    from sfn_stream.simulated_beamline import multi_metal_materials

    return multi_metal_materials(among=set(read_unified_splits()["test"]))[0]


print(f"""sfn-stream session ready. Sample loaded on the simulated beamline: {sample.name}
  RE(powder_scan(powder, sample="S1"))
  RE(xanes_scan(xas, mono, "{sample.absorber}", composition="{sample.formula}", sample="S1"))
  plugin.summaries                                  # what the plugin said about each run
  runs_where(client, species="{sample.absorber}1+")             # query the predictions in Tiled
  samples_where(client, crystal_system="trigonal", species="{sample.absorber}1+")
  measure_with_agent(material="amcsd-00018")        # a two-metal corpus material, edge by edge with the agent""")
