from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.AddField(
            model_name='StakeAction',
            name='balance_before_rao',
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name='StakeAction',
            name='block_before',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='StakeAction',
            name='nonce_before',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='StakeAction',
            name='stake_before_rao',
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name='StakeAction',
            name='submitted_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
