"""What a Phi-3 training job must satisfy, shared by the trainer and the Pulumi program: its chat
data (data_validation), its flags' values (flag_rules) and its GPU memory (memory, with the
attention and sharding choices it depends on). Standard library only: the program's environment
has no torch."""
