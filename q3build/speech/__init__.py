"""Speech QA: what checks a built speech service and measures it.

  facts       the model's fixed numbers and file names (sample and frame rates, talker/mmproj, languages)
  argv        the llama-server and llama-tts command lines every tool here runs
  server      a llama-server we start (lifecycle) and the HTTP client of its speech routes
  audio       WAV / SSE / PCM parsing of what the service answers
  reference   whether the official implementation (qwen-tts) is installed
  validate    the checks of `q3build validate`
  bench/      `q3build bench`: runs, log parsing, weight bytes, bandwidth, the Markdown report
  model/      tiny checkpoints, conversion, parity with the official implementation
"""
